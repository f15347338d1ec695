// Package node wires one swarmgen node: the libp2p host and identity,
// discovery, capacity ads, the job flow, the result store and the HTTP API,
// and owns their lifecycle.
package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgen/swarmgen/protocol"
)

// Version is the agent version nodes advertise.
var Version = "0.1.0"

// Config configures one node. The zero value is not usable: start from
// DefaultConfig and validate with Validate.
type Config struct {
	DataDir    string        // identity, datastore, blocks, task dirs
	Listen     []string      // multiaddrs to listen on
	Bootstrap  []string      // full multiaddrs (/p2p/<id>) to dial at start
	Pool       string        // pool name, scopes topics
	PSKFile    string        // private network swarm key; empty = public
	API        string        // HTTP API listen address; empty = off
	Gateway    string        // HTTP gateway listen address; empty = off
	Executor   string        // "process" or "docker"
	CPUs       float64       // cores offered; 0 = all
	Memory     int64         // bytes offered; 0 = all
	GPUs       string        // "all", "none", or a comma list of indices/UUIDs
	AdInterval time.Duration // periodic capacity ad
	AdTTL      time.Duration // ad TTL; 0 = 3 × AdInterval
	DHT        bool          // run a Kademlia DHT for wide-area discovery
	MDNS       bool          // LAN discovery
	NAT        bool          // port mapping, AutoNAT, hole punching
	Slots      int           // tasks run at once; 0 = derived from CPUs
	Labels     map[string]string
	// Templates restricts which templates this node runs as a provider;
	// empty = any built-in.
	Templates []string
	// AllowImages restricts which container images the docker executor
	// runs (a template's docker image, matched exactly); empty = any. A
	// template whose image is not allowed still runs with another executor
	// it names, if this node has one.
	AllowImages []string
	// Provide: whether this node takes tasks from others.
	Provide bool
	// Python is the interpreter for Python apps (Stable Diffusion).
	Python string
	// TemplateDir adds templates from a directory.
	TemplateDir string
	// TaskDir is where a provider makes its task directories (the app
	// contract's params.json, input/, output/); empty = DataDir/tasks. A
	// tmpfs here saves a few file-system operations per task, which is most
	// of a tiny task's cost on a slow disk.
	TaskDir string
	// SwarmgenBinary is the path of the swarmgen binary that process apps
	// run as "{swarmgen} app <name>"; empty = this executable.
	SwarmgenBinary string
	// PricePerTaskMicros is the asking price per task.
	PricePerTaskMicros int64
	// ModelMap replaces model references in Stable Diffusion params before a
	// task runs (e.g. a Hub id by a local directory holding that model, or a
	// stand-in on a machine that cannot reach the Hub). From
	// SWARMGEN_MODEL_MAP="from=to,from2=to2" by default.
	ModelMap map[string]string
}

// ParseModelMap parses "from=to,from2=to2".
func ParseModelMap(s string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		from, to, ok := strings.Cut(kv, "=")
		if !ok || from == "" || to == "" {
			return nil, fmt.Errorf("model map entry %q: want from=to", kv)
		}
		m[from] = to
	}
	return m, nil
}

// DefaultConfig returns the defaults of `swarmgen node run`.
func DefaultConfig() Config {
	home, _ := os.UserHomeDir()
	c := Config{
		DataDir:    filepath.Join(home, ".swarmgen"),
		Listen:     []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"},
		Pool:       "public",
		API:        "127.0.0.1:5080",
		Executor:   "process",
		GPUs:       "all",
		AdInterval: 10 * time.Second,
		MDNS:       true,
		NAT:        true,
		Provide:    true,
		Python:     os.Getenv("SWARMGEN_PYTHON"),
	}
	if mm, err := ParseModelMap(os.Getenv("SWARMGEN_MODEL_MAP")); err == nil && len(mm) > 0 {
		c.ModelMap = mm
	}
	return c
}

// Validate checks c and names the first bad setting.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir: must not be empty"))
	}
	if err := protocol.ValidatePool(c.Pool); err != nil {
		errs = append(errs, fmt.Errorf("pool: %w", err))
	}
	for _, a := range c.Listen {
		if _, err := ma.NewMultiaddr(a); err != nil {
			errs = append(errs, fmt.Errorf("listen %q: %w", a, err))
		}
	}
	for _, a := range c.Bootstrap {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("bootstrap %q: %w", a, err))
			continue
		}
		if _, err := m.ValueForProtocol(ma.P_P2P); err != nil {
			errs = append(errs, fmt.Errorf("bootstrap %q: must end in /p2p/<peer-id>", a))
		}
	}
	for name, addr := range map[string]string{"api": c.API, "gateway": c.Gateway} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port: %w", name, addr, err))
		}
	}
	switch c.Executor {
	case "process", "docker":
	default:
		errs = append(errs, fmt.Errorf("executor %q: want process or docker", c.Executor))
	}
	if c.CPUs < 0 {
		errs = append(errs, fmt.Errorf("cpus %v: must be >= 0", c.CPUs))
	}
	if c.Memory < 0 {
		errs = append(errs, fmt.Errorf("memory %d: must be >= 0", c.Memory))
	}
	if _, err := ParseGPUSelection(c.GPUs); err != nil {
		errs = append(errs, fmt.Errorf("gpus: %w", err))
	}
	if c.AdInterval < 100*time.Millisecond || c.AdInterval > 5*time.Minute {
		errs = append(errs, fmt.Errorf("ad-interval %s: must be between 100ms and 5m", c.AdInterval))
	}
	if c.Slots < 0 {
		errs = append(errs, fmt.Errorf("slots %d: must be >= 0", c.Slots))
	}
	return errors.Join(errs...)
}

// GPUSelection is the parsed --gpus flag.
type GPUSelection struct {
	All  bool
	None bool
	IDs  []string // indices or UUIDs
}

// ParseGPUSelection parses "all", "none" or a comma-separated list.
func ParseGPUSelection(s string) (GPUSelection, error) {
	switch strings.TrimSpace(s) {
	case "", "all":
		return GPUSelection{All: true}, nil
	case "none":
		return GPUSelection{None: true}, nil
	}
	var sel GPUSelection
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			return sel, fmt.Errorf("%q: empty entry in list", s)
		}
		sel.IDs = append(sel.IDs, p)
	}
	return sel, nil
}
