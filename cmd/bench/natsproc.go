package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // the serve-nats child's profile, with --profile
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

// The bench's JetStream server runs as a process of its own, as nats-server
// does in production: this binary started again in serve-nats mode. Embedded
// in the bench process, the server would share the load generator's Go
// runtime. The raw publisher of step 1 would then hand its messages to the
// server's goroutines without crossing processes, and the garbage collector
// would pace the server by the bench's heap (the 100k messages built up front
// for the raw publish, little during the relay's drain): the limit every
// relay ratio divides by would be measured under conditions the relay, a
// separate process, never gets.

// serveNATSCommand is the hidden first argument that makes this binary run
// the JetStream server.
const serveNATSCommand = "serve-nats"

// serveNATS runs an embedded JetStream server on 127.0.0.1:--port with its
// store in --dir until SIGTERM or SIGINT.
func serveNATS(args []string) error {
	fs := flag.NewFlagSet(serveNATSCommand, flag.ContinueOnError)
	dir := fs.String("dir", "", "JetStream store directory")
	port := fs.Int("port", 0, "client port on 127.0.0.1")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *port <= 0 {
		return errors.New("serve-nats: --dir and --port are required")
	}
	if addr := os.Getenv("JSB_BENCH_PPROF_ADDR"); addr != "" {
		go func() {
			if err := http.ListenAndServe(addr, nil); err != nil {
				fmt.Fprintln(os.Stderr, "serve-nats: pprof listener:", err)
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ns, err := localenv.StartNATS(localenv.NATSOptions{Dir: *dir, Port: *port})
	if err != nil {
		return err
	}
	fmt.Printf("nats-server %s with JetStream ready on %s\n", server.VERSION, ns.URL())
	<-ctx.Done()
	ns.Shutdown()
	fmt.Println("nats-server stopped")
	return nil
}

// startNATS starts the serve-nats child and waits until JetStream answers.
func (b *bench) startNATS(ctx context.Context) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("start nats: find this binary: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("start nats: %w", err)
	}
	p := &proc{name: "nats", logPath: filepath.Join(localenv.LogDir(b.dir), "00-nats.log")}
	env := baseEnviron()
	if b.opts.Profile != "" {
		if p.pprofAddr, err = freeAddr(); err != nil {
			return err
		}
		env = append(env, "JSB_BENCH_PPROF_ADDR="+p.pprofAddr)
	}
	if p.Child, err = localenv.StartChild(p.name, p.logPath, env, exe, serveNATSCommand,
		"--dir", filepath.Join(b.dir, "jetstream"), "--port", port); err != nil {
		return err
	}
	b.natsProc, b.natsURL = p, "nats://"+addr
	// Stop waiting as soon as the child exits.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.Done():
			cancel()
		case <-wctx.Done():
		}
	}()
	if err := localenv.WaitJetStream(wctx, b.natsURL, 30*time.Second); err != nil {
		if p.exited() {
			return fmt.Errorf("start nats: exited: %v\n%s", p.Err(), p.tail(20))
		}
		return fmt.Errorf("start nats: %w\n%s", err, p.tail(20))
	}
	return nil
}

// natsPID is the JetStream server's process id; 0 when the server was given.
func (b *bench) natsPID() int {
	if b.natsProc == nil || b.natsProc.exited() {
		return 0
	}
	return b.natsProc.pid()
}

// natsDescription says which server the run uses, for the report.
func (b *bench) natsDescription() string {
	if b.natsProc == nil {
		return "given server"
	}
	return "nats-server " + server.VERSION + " in a process of its own, file storage"
}
