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
		return err
	}
	s.logStart()
	publishSrv, adminSrv := s.servers()
	var servers sync.WaitGroup
	serveErr := make(chan error, 2)
	servers.Go(func() { serveErr <- publishSrv.Serve(s.publishLn) })
	servers.Go(func() { serveErr <- adminSrv.Serve(s.adminLn) })
	s.admin.SetReady()

	work, stopWork := context.WithCancel(context.Background())      // readers, refreshers, watchers
	relayCtx, stopRelay := context.WithCancel(context.Background()) // the relay outlives work: it drains
	hard, stopHard := context.WithCancel(context.Background())      // in-flight deliveries
	defer stopWork()
	defer stopRelay()
	defer stopHard()

	var loops, subs sync.WaitGroup
	loops.Go(func() { _ = s.relay.Run(relayCtx) })
	for _, sub := range s.subs {
		subs.Go(func() { _ = sub.Run(work, hard) })
	}
	subsDone := make(chan struct{})
	loops.Go(func() { subs.Wait(); close(subsDone) })
	loops.Go(func() { s.checkRedis(work) })
	outboxFailed := make(chan error, 1)
	loops.Go(func() { s.watchOutbox(work, outboxFailed) })
	loops.Go(func() {
		_ = s.trimmer.Run(work, &s.topics, s.subscribes, s.refreshEvery, s.log)
	})

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("serve: %w", err)
	case err := <-outboxFailed:
		// Every publish answers 503 now; a restart reopens and repairs the
		// outbox, so exit loudly (after draining what is there) and let the
		// orchestrator restart ferry.
		s.log.Error("outbox failed: exiting so that it is reopened", "err", err)
		runErr = err
	}

	// Shutdown, within FERRY_SHUTDOWN_TIMEOUT.
	budget, cancelBudget := context.WithTimeout(context.Background(), s.cfg.ShutdownBudget)
	defer cancelBudget()
	s.admin.SetShuttingDown()
	s.publish.Close() // the listener stays open: new publishes get 503 shutting-down until exit
	s.log.Info("shutdown started", "budget", s.cfg.ShutdownBudget.String())
	stopWork() // consumers stop reading; in-flight deliveries finish until the budget ends
	select {
	case <-subsDone:
	case <-budget.Done():
		stopHard()
		<-subsDone
	}
	remaining := s.drain(budget)
	stopRelay()
	loops.Wait()
	_ = publishSrv.Shutdown(budget)
	_ = adminSrv.Shutdown(budget)
	servers.Wait()
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
