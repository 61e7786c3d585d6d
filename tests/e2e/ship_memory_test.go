package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestShipMemoryFlat: ferry ship from stdin into a dir store with 16 MiB
// segments stays within 64 MiB of peak RSS (the issue 22 goal; its
// default memory_limit is 48 MiB there), whatever the input's size: 4 times
// the input costs no more than 8 MiB more. Without the memory limit the
// garbage collector lets the heap reach twice the live data, about 85 MiB.
// The smaller input is past the warm-up: the compression buffers kept
// across GCs fill their free lists over the first few segments (48 MiB of
// input peaked at 51-56 MiB, 96 MiB and more at 59.5-61 MiB).
func TestShipMemoryFlat(t *testing.T) {
	const (
		mib   = 1 << 20
		limit = 64 * mib
	)
	var peaks []int64
	for _, size := range []int64{96 << 20, 384 << 20} {
		in := writeLogInput(t, size)
		s := newStream(t, "mem")
		m := shipMeasured(t, in, s.shipArgs("--max-bytes", "16MiB", "--fsync", "batch")...)
		if m.code != 0 {
			t.Fatalf("ship of %d MiB: exit %d:\n%s", size>>20, m.code, clip(m.stderr))
		}
		if !strings.Contains(m.stderr, "memory_limit=48MiB") {
			t.Errorf("ship of %d MiB: the start line does not give memory_limit=48MiB:\n%s", size>>20, clip(m.stderr))
		}
		t.Logf("ship of %d MiB: peak RSS %.1f MiB (VmHWM), %s", size>>20, float64(m.hwm)/mib, m.elapsed.Round(time.Millisecond))
		if m.hwm > limit {
			t.Errorf("ship of %d MiB: peak RSS %.1f MiB, over %d MiB", size>>20, float64(m.hwm)/mib, limit>>20)
		}
		if m.hwm == 0 {
			t.Fatalf("ship of %d MiB: no VmHWM read", size>>20)
		}
		peaks = append(peaks, m.hwm)
	}
	if peaks[1] > peaks[0]+8<<20 {
		t.Errorf("peak RSS grows with the input: %.1f MiB for 96 MiB, %.1f MiB for 384 MiB", float64(peaks[0])/mib, float64(peaks[1])/mib)
	}
}

// writeLogInput writes about size bytes of log lines to a file of the
// test's and returns its path: ship reads it as stdin, so this process
// holds none of it (a child's RSS is read from its own VmHWM).
func writeLogInput(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "input.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const block = 100_000
	for n, first := int64(0), 0; n < size; first += block {
		b := logLines(22, first, block)
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		n += int64(len(b))
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// shipMeasured runs ferry with the file input as stdin to completion
// (within 3 minutes) and reads its peak RSS from VmHWM every 2 ms, as
// runMeasuredTo does.
func shipMeasured(t *testing.T, input string, args ...string) measured {
	t.Helper()
	in, err := os.Open(input)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd := exec.Command(ferryBin, args...)
	var stderr strings.Builder
	cmd.Stdin, cmd.Stderr = in, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(3*time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var hwm int64
	for tick := time.NewTicker(2 * time.Millisecond); ; {
		hwm = max(hwm, readVmHWM(status))
		select {
		case err = <-done:
			tick.Stop()
		case <-tick.C:
			continue
		}
		break
	}
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		t.Fatalf("ferry %s: %v (%s)", strings.Join(args, " "), err, clip(stderr.String()))
	}
	return measured{code: cmd.ProcessState.ExitCode(), stderr: stderr.String(), hwm: hwm, elapsed: time.Since(start)}
}
