package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

const (
	// checkInterval is how often the plugin checks its socket and
	// kubelet.sock even without file-system events.
	checkInterval = 500 * time.Millisecond
	// registerTimeout bounds one Register call.
	registerTimeout   = 5 * time.Second
	kubeletSocketName = "kubelet.sock"
)

// fileID identifies one incarnation of a file: a re-created file has another
// inode (or at least another change time).
type fileID struct {
	ino   uint64
	ctime int64
}

func statID(path string) (fileID, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{ctime: fi.ModTime().UnixNano()}, true
	}
	return fileID{ino: st.Ino, ctime: st.Ctim.Nano()}, true
}

// server runs the plugin's gRPC server and keeps it registered.
type server struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	grpc      *grpc.Server
	serveDone chan struct{}
	ownID     fileID
	// registeredWith is the kubelet.sock the plugin last registered with.
	registeredWith fileID
	registered     bool
	registrations  int
	// checks counts the completed calls of check, whatever they found or
	// did. Nothing acts on it: it is the signal tests wait on to know that
	// the plugin looked at its socket and kubelet.sock again.
	checks int
}

// Start serves the plugin on its socket, registers with the kubelet (now if
// kubelet.sock exists, else as soon as it appears) and keeps doing so across
// kubelet restarts and removals of the plugin's socket until ctx ends or Stop
// is called. An error means the socket could not be served at all.
func (p *Plugin) Start(ctx context.Context) error {
	if p.srv != nil {
		return errors.New("device plugin already started")
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &server{cancel: cancel, done: make(chan struct{})}
	if err := p.serve(s); err != nil {
		cancel()
		return err
	}
	p.srv = s
	p.check(ctx, s)
	go p.run(ctx, s)
	return nil
}

// Stop stops serving and waits for the plugin's goroutines. The socket is
// removed, so the kubelet marks the resource's devices unavailable.
func (p *Plugin) Stop() {
	if p.srv == nil {
		return
	}
	p.srv.cancel()
	<-p.srv.done
}

// Registrations counts successful registrations with the kubelet.
func (p *Plugin) Registrations() int {
	if p.srv == nil {
		return 0
	}
	p.srv.mu.Lock()
	defer p.srv.mu.Unlock()
	return p.srv.registrations
}

func (p *Plugin) run(ctx context.Context, s *server) {
	defer close(s.done)
	defer p.stopServing(s)
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w, err := fsnotify.NewWatcher(); err != nil {
		p.logger.Info("No file-system notifications; polling the device-plugin directory", "err", err)
	} else if err := w.Add(p.cfg.DevicePluginPath); err != nil {
		p.logger.Info("No file-system notifications; polling the device-plugin directory", "err", err)
		_ = w.Close()
	} else {
		defer func() { _ = w.Close() }()
		events, errs = w.Events, w.Errors
	}
	tick := time.NewTicker(checkInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			name := filepath.Base(ev.Name)
			if name != kubeletSocketName && name != p.cfg.SocketName {
				continue
			}
		case err := <-errs:
			p.logger.V(2).Info("File-system watch error", "err", err)
			continue
		case <-tick.C:
		}
		p.check(ctx, s)
	}
}

// check restarts the server when its socket is gone or the kubelet was
// restarted since the last registration, and registers when needed.
func (p *Plugin) check(ctx context.Context, s *server) {
	defer func() {
		s.mu.Lock()
		s.checks++
		s.mu.Unlock()
	}()
	s.mu.Lock()
	ownID, registeredWith, registered := s.ownID, s.registeredWith, s.registered
	s.mu.Unlock()

	kubelet, kubeletOK := statID(filepath.Join(p.cfg.DevicePluginPath, kubeletSocketName))
	own, ownOK := statID(p.SocketPath())
	restart := false
	switch {
	case !ownOK || own != ownID:
		p.logger.Info("Plugin socket removed or replaced; serving again", "socket", p.SocketPath())
		restart = true
	case registered && kubeletOK && kubelet != registeredWith:
		p.logger.Info("Kubelet restarted; serving and registering again")
		restart = true
	}
	if restart {
		p.stopServing(s)
		if err := p.serve(s); err != nil {
			p.logger.Error(err, "Cannot serve the device plugin; retrying")
			return
		}
		registered = false
	}
	if registered || !kubeletOK || ctx.Err() != nil {
		return
	}
	if err := p.register(ctx); err != nil {
		p.logger.Error(err, "Registering with the kubelet failed; retrying")
		return
	}
	s.mu.Lock()
	s.registered, s.registeredWith = true, kubelet
	s.registrations++
	s.mu.Unlock()
	p.logger.Info("Registered with the kubelet", "resource", p.ResourceName(), "endpoint", p.cfg.SocketName)
}

// serve listens on the plugin's socket (replacing a stale one) and serves.
func (p *Plugin) serve(s *server) error {
	path := p.SocketPath()
	if err := os.MkdirAll(p.cfg.DevicePluginPath, 0o755); err != nil {
		return fmt.Errorf("device-plugin directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket: %w", err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", path, err)
	}
	// The socket may be removed and re-created under us; never let closing
	// this listener unlink a newer socket at the same path.
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	id, _ := statID(path)
	g := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(g, p)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := g.Serve(lis); err != nil {
			p.logger.Error(err, "Device plugin server stopped")
		}
	}()
	s.mu.Lock()
	s.grpc, s.serveDone, s.ownID = g, done, id
	s.mu.Unlock()
	return nil
}

// stopServing stops the gRPC server (ending ListAndWatch streams) and removes
// the socket if it is still the one it served.
func (p *Plugin) stopServing(s *server) {
	s.mu.Lock()
	g, done, id := s.grpc, s.serveDone, s.ownID
	s.grpc, s.serveDone, s.ownID, s.registered = nil, nil, fileID{}, false
	s.mu.Unlock()
	if g == nil {
		return
	}
	g.Stop()
	<-done
	if cur, ok := statID(p.SocketPath()); ok && cur == id {
		_ = os.Remove(p.SocketPath())
	}
}

func (p *Plugin) register(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+filepath.Join(p.cfg.DevicePluginPath, kubeletSocketName),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     p.cfg.SocketName,
		ResourceName: p.ResourceName(),
		Options:      &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	})
	return err
}
