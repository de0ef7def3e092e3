//go:build linux && (amd64 || arm64)

package transport

import (
	"syscall"
	"unsafe"
)

// peekSocket is recv(fd, one, MSG_PEEK|MSG_DONTWAIT): it takes nothing from
// the socket and never blocks. It is the raw system call because
// syscall.Recvfrom's frames (its address buffer) would grow the waiting
// goroutine's stack past 2 KiB, which is what readWaiter is for.
func peekSocket(fd uintptr, one []byte) error {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&one[0])), uintptr(len(one)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
