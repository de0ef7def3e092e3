package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is sysconf(_SC_CLK_TCK): 100 on every Linux architecture Go
// supports, so it is not read at run time.
const clockTicks = 100

// procCPUSeconds returns utime+stime of pid (0 means this process) from
// /proc/<pid>/stat, in seconds.
func procCPUSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(procPath(pid, "stat"))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(data)
}

// parseStatCPU reads fields 14 (utime) and 15 (stime) of a /proc stat line.
// The command name (field 2) may hold spaces and parentheses, so fields are
// counted after its last ')'.
func parseStatCPU(data []byte) (float64, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat: no ')'")
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); utime is field 14, so f[11]; stime f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc stat: %d fields after the name", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed /proc stat: utime %q stime %q", f[11], f[12])
	}
	return float64(ut+st) / clockTicks, nil
}

// procRSSBytes returns VmRSS of pid (0 means this process) from
// /proc/<pid>/status.
func procRSSBytes(pid int) (int64, error) {
	data, err := os.ReadFile(procPath(pid, "status"))
	if err != nil {
		return 0, err
	}
	return parseStatusRSS(data)
}

func parseStatusRSS(data []byte) (int64, error) {
	for line := range strings.SplitSeq(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("malformed VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed VmRSS line %q", line)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no VmRSS line (a kernel thread or a zombie?)")
}

func procPath(pid int, file string) string {
	if pid == 0 {
		return "/proc/self/" + file
	}
	return "/proc/" + strconv.Itoa(pid) + "/" + file
}

// procSample is the CPU and RSS of a set of processes at one moment.
type procSample struct {
	cpu []float64 // seconds, one per pid
	rss []int64   // bytes, one per pid
}

// sampleProcs reads every pid; the first error names the pid.
func sampleProcs(pids []int) (procSample, error) {
	s := procSample{cpu: make([]float64, len(pids)), rss: make([]int64, len(pids))}
	for i, pid := range pids {
		c, err := procCPUSeconds(pid)
		if err != nil {
			return s, fmt.Errorf("pid %d: %w", pid, err)
		}
		r, err := procRSSBytes(pid)
		if err != nil {
			return s, fmt.Errorf("pid %d: %w", pid, err)
		}
		s.cpu[i], s.rss[i] = c, r
	}
	return s, nil
}

// cpuDelta is the summed CPU seconds from a to b.
func cpuDelta(a, b procSample) float64 {
	d := 0.0
	for i := range b.cpu {
		d += b.cpu[i] - a.cpu[i]
	}
	return d
}
