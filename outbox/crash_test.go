package outbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// crashDirEnv tells the test binary, re-executed as a child, to run
// TestCrashChild in that directory.
const crashDirEnv = "FERRY_OUTBOX_CRASH_DIR"

const crashWriters, crashMaxPerWriter = 4, 20000

// TestCrashChild is the child of TestCrashSIGKILL: it appends records from
// several goroutines and prints "ack <writer> <i>" for each acknowledged one
// until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestCrashSIGKILL")
	}
	l, err := Open(Options{Dir: dir, SegmentBytes: 16 << 10})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for w := range crashWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range crashMaxPerWriter {
				if err := l.Append(context.Background(), []byte(fmt.Sprintf("%d %d %s", w, i, strings.Repeat("x", i%300)))); err != nil {
					fmt.Println("append:", err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintf(out, "ack %d %d\n", w, i)
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestCrashSIGKILL kills a process that is appending and checks that every
// record it acknowledged is in the log, in order, after reopening.
func TestCrashSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	const killAfter = 2000
	acked := make([]int, crashWriters) // per writer: how many acknowledged
	for i := range acked {
		acked[i] = -1
	}
	sc := bufio.NewScanner(stdout)
	lines := 0
	killed := false
	for sc.Scan() {
		var w, i int
		if _, err := fmt.Sscanf(sc.Text(), "ack %d %d", &w, &i); err != nil {
			t.Logf("child: %s", sc.Text())
			continue
		}
		if i != acked[w]+1 {
			t.Fatalf("child acked %d %d after %d", w, i, acked[w])
		}
		acked[w] = i
		if lines++; lines == killAfter {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !killed || !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed mid-stream after %d acks: %v", lines, err)
	}

	l := openLog(t, Options{Dir: dir})
	next := make([]int, crashWriters)
	from := Position{}
	for range 1000000 {
		entries, err := l.Read(from, 1000, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 {
			break
		}
		for _, e := range entries {
			f := strings.Fields(string(e.Data))
			w, _ := strconv.Atoi(f[0])
			i, _ := strconv.Atoi(f[1])
			if i != next[w] {
				t.Fatalf("writer %d: record %d where %d was due", w, i, next[w])
			}
			next[w]++
		}
		from = entries[len(entries)-1].Next
	}
	for w := range crashWriters {
		if next[w] <= acked[w] {
			t.Errorf("writer %d: %d records in the log, %d acknowledged", w, next[w], acked[w]+1)
		}
	}
	t.Logf("acknowledged %v (last index per writer), recovered %v records per writer, stats %+v", acked, next, l.Stats())
}
