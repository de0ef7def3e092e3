//go:build unix && !(linux && (amd64 || arm64))

package transport

import "syscall"

// peekSocket is recv(fd, one, MSG_PEEK): it takes nothing from the
// socket (which the runtime keeps non-blocking).
func peekSocket(fd uintptr, one []byte) error {
	_, _, err := syscall.Recvfrom(int(fd), one, syscall.MSG_PEEK)
	return err
}
