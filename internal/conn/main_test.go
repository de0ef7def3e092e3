package conn

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine (a writer, a blocked
// fake write, a timer callback) is still running once they are done.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
