// Command writefloor measures what one small TCP write costs on this
// machine when it wakes a reader in another process: the floor under a
// node's CPU per delivery, since hubfabric writes each message to each
// recipient's socket (one write per delivery unless a connection is
// backlogged and several records share a frame).
//
//	go run ./scripts/writefloor                   # 1000 conns, 25,000 writes/s, 150 bytes
//	go run ./scripts/writefloor -conns 1 -rate 0  # one connection, writes back to back
//
// It starts itself as the reading process (one goroutine per connection,
// like the load generator), writes -size bytes to the connections in turn
// at -rate writes/s (0: as fast as possible) for -duration on loopback, and
// prints the CPU time (user + system, from getrusage) each side spent per
// write.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func main() {
	conns := flag.Int("conns", 1000, "connections")
	rate := flag.Int("rate", 25000, "writes per second over all connections (0: back to back)")
	size := flag.Int("size", 150, "bytes per write")
	duration := flag.Duration("duration", 5*time.Second, "how long to write")
	reader := flag.String("reader", "", "internal: run as the reading process, dialling this address")
	flag.Parse()
	if *reader != "" {
		if err := read(*reader, *conns); err != nil {
			fmt.Fprintln(os.Stderr, "writefloor reader:", err)
			os.Exit(1)
		}
		return
	}
	if err := write(*conns, *rate, *size, *duration); err != nil {
		fmt.Fprintln(os.Stderr, "writefloor:", err)
		os.Exit(1)
	}
}

func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// read dials n connections, drains them, and when they close prints its
// own CPU time on stdout.
func read(addr string, n int) error {
	var wg sync.WaitGroup
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}()
	}
	fmt.Println("ready")
	wg.Wait()
	fmt.Println(int64(cpuTime(syscall.RUSAGE_SELF)))
	return nil
}

func write(n, rate, size int, duration time.Duration) error {
	if n < 1 || size < 1 || rate < 0 || duration <= 0 {
		return fmt.Errorf("need -conns >= 1, -size >= 1, -rate >= 0 and a positive -duration")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	cmd := exec.Command(os.Args[0], "-reader", ln.Addr().String(), "-conns", strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close() // ends the reader's copies, so Wait returns
			}
		}
		_ = cmd.Wait()
	}()
	for i := range conns {
		if conns[i], err = ln.Accept(); err != nil {
			return err
		}
	}
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "ready" {
		return fmt.Errorf("reader did not start")
	}
	msg := make([]byte, size)
	var interval time.Duration
	if rate > 0 {
		interval = time.Second / time.Duration(rate)
	}
	cpu0, start := cpuTime(syscall.RUSAGE_SELF), time.Now()
	writes := 0
	for time.Since(start) < duration {
		if interval > 0 {
			if d := time.Until(start.Add(time.Duration(writes) * interval)); d > 0 {
				time.Sleep(d)
			}
		}
		if _, err := conns[writes%n].Write(msg); err != nil {
			return err
		}
		writes++
	}
	cpu := cpuTime(syscall.RUSAGE_SELF) - cpu0
	wall := time.Since(start)
	for _, c := range conns {
		c.Close()
	}
	if !lines.Scan() {
		return fmt.Errorf("reader did not report its CPU time")
	}
	readerNS, err := strconv.ParseInt(lines.Text(), 10, 64)
	if err != nil {
		return err
	}
	fmt.Printf("%d connections, %d writes of %d bytes in %.1f s (%.0f/s)\n", n, writes, size, wall.Seconds(), float64(writes)/wall.Seconds())
	fmt.Printf("writer CPU per write: %.2f µs\n", float64(cpu.Nanoseconds())/float64(writes)/1e3)
	fmt.Printf("reader CPU per write: %.2f µs (whole reader process, connection setup included)\n", float64(readerNS)/float64(writes)/1e3)
	return nil
}
