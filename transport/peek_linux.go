//go:build linux && (amd64 || arm64)

package transport

import (
	"syscall"
	"unsafe"
)

// peekSocket is recv(fd, one, MSG_PEEK|MSG_DONTWAIT): it takes nothing from
// the socket and never blocks. It is the raw system call because
// syscall.Recvfrom also asks for the sender's address, which a connected
// socket has no use for (and which costs an allocation).
func peekSocket(fd uintptr, one []byte) error {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&one[0])), uintptr(len(one)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
