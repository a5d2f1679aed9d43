package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// console serialises whole lines from several processes onto one writer,
// each prefixed with the name of the process that wrote it.
type console struct {
	mu  sync.Mutex
	out io.Writer
}

func (c *console) line(name, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.out, "%-13s | %s\n", name, text)
}

func (c *console) printf(format string, args ...any) {
	c.line("demo", fmt.Sprintf(format, args...))
}

// prefixWriter splits a process's output into lines for the console.
type prefixWriter struct {
	c    *console
	name string
	mu   sync.Mutex
	buf  []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.c.line(w.name, string(bytes.TrimRight(w.buf[:i], "\r")))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *prefixWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.c.line(w.name, string(w.buf))
		w.buf = nil
	}
}

// proc is one child process of the demo.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *prefixWriter
	done chan struct{}
	code int // valid once done is closed
}

// start runs bin with exactly env (nothing inherited but what env holds).
func start(c *console, name, bin string, args, env []string) (*proc, error) {
	p := &proc{name: name, out: &prefixWriter{c: c, name: name}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = sysProcAttr()
	p.cmd.WaitDelay = 2 * time.Second // do not hang on a pipe held open by a grandchild
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.out.flush()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to within for the exit, then SIGKILLs.
// It returns the exit code (-1 when the process had to be killed) and
// whether it exited on its own.
func (p *proc) stop(within time.Duration) (code int, clean bool) {
	if p.exited() {
		return p.code, true
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.code, true
	case <-time.After(within):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	return -1, false
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago; all listeners are held until the last one is chosen.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
