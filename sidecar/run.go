package sidecar

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Run serves until ctx ends, then shuts down in the order DESIGN.md gives.
// It returns *UndrainedError when records remain in the outbox.
func (s *Sidecar) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		s.outbox.Close()
		s.rdb.Close()
		_ = s.tracer.Shutdown(context.Background()) // nothing to export yet
		return err
	}
	s.logStart()
	publishSrv, adminSrv := s.servers()
	var servers sync.WaitGroup
	serveErr := make(chan error, 2)
	servers.Go(func() { serveErr <- publishSrv.Serve(s.publishLn) })
	servers.Go(func() { serveErr <- adminSrv.Serve(s.adminLn) })
	s.admin.SetReady()

	p := s.start()
	defer p.stop()

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("serve: %w", err)
	case err := <-p.outboxFailed:
		// Every publish answers 503 now; a restart reopens and repairs the
		// outbox, so exit loudly (after draining what is there) and let the
		// orchestrator restart ferry.
		s.log.Error("outbox failed: exiting so that it is reopened", "err", err)
		runErr = err
	}

	// Shutdown, within FERRY_SHUTDOWN_TIMEOUT.
	budget, cancelBudget := context.WithTimeout(context.Background(), s.cfg.ShutdownBudget)
	defer cancelBudget()
	remaining := s.stopParts(budget, p)
	_ = publishSrv.Shutdown(budget)
	_ = adminSrv.Shutdown(budget)
	servers.Wait()
	s.client.CloseIdleConnections()
	s.shutdownTracer(budget)
	if err := s.outbox.Close(); err != nil {
		s.log.Error("close outbox", "err", err)
	}
	s.rdb.Close()
	if remaining > 0 {
		s.log.Error("shutdown with records left in the outbox", "records", remaining)
		return errors.Join(runErr, &UndrainedError{Records: remaining})
	}
	s.log.Info("shutdown complete", "records", 0)
	return runErr
}

// tracerShutdownMax bounds the export of the last spans at shutdown: a
// collector that is down must not hold ferry's exit to the whole budget.
const tracerShutdownMax = 5 * time.Second

// shutdownTracer exports the spans still buffered, once every part that
// makes them has stopped, within the budget and tracerShutdownMax.
func (s *Sidecar) shutdownTracer(budget context.Context) {
	ctx, cancel := context.WithTimeout(budget, tracerShutdownMax)
	defer cancel()
	if err := s.tracer.Shutdown(ctx); err != nil {
		s.log.Warn("tracing: spans not exported at shutdown", "err", err)
	}
}

// running are the started parts: the contexts that stop them and what joins them.
type running struct {
	stopWork, stopRelay, stopHard context.CancelFunc
	loops                         sync.WaitGroup // the relay and the loops below
	subsDone                      chan struct{}
	outboxFailed                  chan error
}

func (p *running) stop() { p.stopWork(); p.stopRelay(); p.stopHard() }

// start runs the relay, one subscriber per subscription and the watchers,
// each under the context that stops it: work (readers, refreshers,
// watchers), the relay's own (it outlives work: it drains), hard
// (in-flight deliveries).
func (s *Sidecar) start() *running {
	p := &running{subsDone: make(chan struct{}), outboxFailed: make(chan error, 1)}
	work, stopWork := context.WithCancel(context.Background())
	relayCtx, stopRelay := context.WithCancel(context.Background())
	hard, stopHard := context.WithCancel(context.Background())
	p.stopWork, p.stopRelay, p.stopHard = stopWork, stopRelay, stopHard
	p.loops.Go(func() { _ = s.relay.Run(relayCtx) })
	var subs sync.WaitGroup
	for _, sub := range s.subs {
		subs.Go(func() { _ = sub.Run(work, hard) })
	}
	p.loops.Go(func() { subs.Wait(); close(p.subsDone) })
	p.loops.Go(func() { s.checkRedis(work) })
	p.loops.Go(func() { _ = s.app.Run(work) })
	p.loops.Go(func() { s.watchOutbox(work, p.outboxFailed) })
	p.loops.Go(func() { _ = s.trimmer.Run(work, &s.topics, s.subscribes, s.refreshEvery, s.log) })
	return p
}

// stopParts stops what start started, in order, within budget: not ready
// and publish answering 503 (its listener stays open), consumers stop
// reading while in-flight deliveries finish, the relay drains the outbox.
// It returns the records left in the outbox once every loop has ended.
func (s *Sidecar) stopParts(budget context.Context, p *running) int64 {
	s.admin.SetShuttingDown()
	s.publish.Close()
	s.log.Info("shutdown started", "budget", s.cfg.ShutdownBudget.String())
	p.stopWork()
	select {
	case <-p.subsDone:
	case <-budget.Done():
		p.stopHard()
		<-p.subsDone
	}
	remaining := s.drain(budget)
	p.stopRelay()
	p.loops.Wait()
	return remaining
}

// drain waits until the relay has emptied the outbox or the budget ends,
// and returns the records left.
func (s *Sidecar) drain(ctx context.Context) int64 {
	for {
		pending := s.outbox.Stats().PendingRecords
		if pending == 0 {
			return 0
		}
		s.log.Info("draining outbox", "records", pending)
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return s.outbox.Stats().PendingRecords
		case <-s.relay.Committed():
		case <-t.C:
		}
		t.Stop()
	}
}

// watchOutbox reports once on failed when the outbox can no longer write
// (outbox.ErrFailed); it checks every second.
func (s *Sidecar) watchOutbox(ctx context.Context, failed chan<- error) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.outbox.Err(); err != nil {
				failed <- err
				return
			}
		}
	}
}

func (s *Sidecar) subscribes(topic string) bool {
	for _, sub := range s.subs {
		if sub.Topic() == topic {
			return true
		}
	}
	return false
}
