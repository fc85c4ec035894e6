package cluster

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Running clusters, so an interrupt can stop them all before the process dies.
var (
	liveMu   sync.Mutex
	live     = map[*Cluster]bool{}
	sigsOnce sync.Once
)

func register(c *Cluster, handleSignals bool) {
	liveMu.Lock()
	live[c] = true
	liveMu.Unlock()
	if handleSignals {
		sigsOnce.Do(watchSignals)
	}
}

func unregister(c *Cluster) {
	liveMu.Lock()
	delete(live, c)
	liveMu.Unlock()
}

// watchSignals stops every live cluster on SIGINT or SIGTERM, keeping their
// logs, then re-raises the signal so the process exits as it would have.
// Without it, Ctrl-C would kill the harness and Pdeathsig its children, but
// leave the work directories behind without saying where.
func watchSignals() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-ch
		liveMu.Lock()
		var cs []*Cluster
		for c := range live {
			cs = append(cs, c)
		}
		liveMu.Unlock()
		fmt.Fprintf(os.Stderr, "cluster: %v: stopping %d cluster(s); repeat to exit at once\n", sig, len(cs))
		go func() {
			<-ch
			os.Exit(1)
		}()
		var wg sync.WaitGroup
		for _, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.MarkFailed()
				c.Stop()
				fmt.Fprintf(os.Stderr, "cluster: stopped; logs in %s\n", c.LogDir)
			}()
		}
		wg.Wait()
		signal.Stop(ch)
		signal.Reset(sig)
		_ = syscall.Kill(os.Getpid(), sig.(syscall.Signal))
		time.Sleep(time.Second)
		os.Exit(1)
	}()
}
