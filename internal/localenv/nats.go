package localenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSOptions configures StartNATS.
type NATSOptions struct {
	// Dir is the JetStream store directory; required.
	Dir string
	// Port on 127.0.0.1; 0 picks a free port (kept across Restart).
	Port int
	// ConfigFile is an optional nats-server config file (accounts, users,
	// permissions). Host, Port, JetStream and its store directory are always
	// overridden; accounts that should use JetStream must enable it themselves.
	ConfigFile string
}

// NATS is an embedded nats-server with JetStream enabled. Restarting it starts
// a new server on the same port and store directory.
type NATS struct {
	dir         string
	configFile  string
	name        string
	port        int
	clusterPort int    // 0 when not clustered
	routes      string // route URLs, comma-separated

	mu  sync.Mutex
	srv *server.Server
	up  bool
}

const natsReadyTimeout = 30 * time.Second

// StartNATS starts an embedded JetStream server and waits until it accepts
// connections and JetStream is enabled.
func StartNATS(opts NATSOptions) (*NATS, error) {
	if opts.Dir == "" {
		return nil, errors.New("start nats: NATSOptions.Dir is required")
	}
	n := &NATS{dir: opts.Dir, configFile: opts.ConfigFile, name: "jsb", port: opts.Port}
	if err := n.Start(); err != nil {
		return nil, err
	}
	return n, nil
}

// URL returns the client URL; it stays the same across Restart.
func (n *NATS) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port()) }

// Port returns the client port.
func (n *NATS) Port() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.port
}

// Server returns the current (or, after Shutdown, the last) server.
func (n *NATS) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Start starts a new server on the same port and store directory. It fails if
// the server is already running.
func (n *NATS) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.up {
		return fmt.Errorf("start nats %s: already running", n.name)
	}
	opts, err := n.options()
	if err != nil {
		return err
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("create nats server %s: %w", n.name, err)
	}
	go s.Start()
	if err := waitNATSReady(s); err != nil {
		s.Shutdown()
		s.WaitForShutdown()
		return fmt.Errorf("start nats %s on port %d: %w", n.name, n.port, err)
	}
	if n.port == 0 {
		n.port = s.Addr().(*net.TCPAddr).Port
	}
	n.srv, n.up = s, true
	return nil
}

// Shutdown stops the server and waits until it is gone. It is idempotent.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.up {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.up = false
}

// Restart shuts the server down and starts it again.
func (n *NATS) Restart() error {
	n.Shutdown()
	return n.Start()
}

// options builds fresh server options for every start: the server keeps
// internal state in the Options it was given.
func (n *NATS) options() (*server.Options, error) {
	opts := &server.Options{}
	if n.configFile != "" {
		var err error
		if opts, err = server.ProcessConfigFile(n.configFile); err != nil {
			return nil, fmt.Errorf("load nats config %s: %w", n.configFile, err)
		}
	}
	if opts.ServerName == "" || n.clusterPort != 0 {
		opts.ServerName = n.name
	}
	opts.Host = "127.0.0.1"
	opts.Port = n.port
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	opts.JetStream = true
	opts.StoreDir = n.dir
	opts.NoSigs = true
	if n.clusterPort != 0 {
		opts.Cluster.Name = "jsb"
		opts.Cluster.Host = "127.0.0.1"
		opts.Cluster.Port = n.clusterPort
		opts.Routes = server.RoutesFromStr(n.routes)
	}
	return opts, nil
}

func waitNATSReady(s *server.Server) error {
	deadline := time.Now().Add(natsReadyTimeout)
	if !s.ReadyForConnections(natsReadyTimeout) {
		return fmt.Errorf("not ready for connections after %s", natsReadyTimeout)
	}
	for !s.JetStreamEnabled() {
		if time.Now().After(deadline) {
			return fmt.Errorf("jetstream not enabled after %s", natsReadyTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Cluster is a set of embedded JetStream servers routed to each other in one
// process, cluster name "jsb".
type Cluster struct {
	Nodes []*NATS
}

const clusterReadyTimeout = 30 * time.Second

// StartCluster starts n JetStream nodes, each with a store directory under
// dir (dir/node-1, ...), and waits until the cluster has a JetStream meta leader. Each node keeps
// its client port, cluster port and routes across Restart.
func StartCluster(dir string, n int) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("start nats cluster: need at least 1 node, got %d", n)
	}
	clusterPorts, err := freePorts(n)
	if err != nil {
		return nil, err
	}
	routes := make([]string, n)
	for i, p := range clusterPorts {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	c := &Cluster{Nodes: make([]*NATS, n)}
	for i := range n {
		c.Nodes[i] = &NATS{
			dir:         filepath.Join(dir, fmt.Sprintf("node-%d", i+1)),
			name:        fmt.Sprintf("jsb-%d", i+1),
			clusterPort: clusterPorts[i],
			routes:      strings.Join(routes, ","),
		}
	}
	// Start nodes together: a lone node has no meta leader and may wait for peers.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, node := range c.Nodes {
		wg.Go(func() { errs[i] = node.Start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Shutdown()
		return nil, fmt.Errorf("start nats cluster: %w", err)
	}
	if err := c.waitMetaLeader(); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// URLs returns the client URLs of all nodes, comma-separated, as nats.Connect takes them.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, node := range c.Nodes {
		urls[i] = node.URL()
	}
	return strings.Join(urls, ",")
}

// Shutdown stops every node. It is idempotent.
func (c *Cluster) Shutdown() {
	var wg sync.WaitGroup
	for _, node := range c.Nodes {
		wg.Go(node.Shutdown)
	}
	wg.Wait()
}

// waitMetaLeader waits until JetStream answers account info, which needs an
// elected meta leader.
func (c *Cluster) waitMetaLeader() error {
	if err := WaitJetStream(context.Background(), c.URLs(), clusterReadyTimeout); err != nil {
		return fmt.Errorf("wait for nats cluster meta leader: %w", err)
	}
	return nil
}

// WaitJetStream waits until a server at urls (comma-separated) accepts a
// connection and JetStream answers account info, or timeout passes or ctx
// ends; it then returns the last error.
func WaitJetStream(ctx context.Context, urls string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := jetStreamAnswers(ctx, urls)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("jetstream at %s not ready: %w (last error: %v)", urls, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// jetStreamAnswers connects to urls once and asks JetStream for the account's info.
func jetStreamAnswers(ctx context.Context, urls string) error {
	nc, err := nats.Connect(urls, nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}
