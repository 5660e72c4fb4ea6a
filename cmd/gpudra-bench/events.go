package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// fsKind is the kind of one inotify event in the CDI spec directory.
type fsKind int

const (
	fsCreate    fsKind = iota // IN_CREATE
	fsWrite                   // IN_MODIFY (one per write call)
	fsMovedTo                 // IN_MOVED_TO: the target of a rename
	fsMovedFrom               // IN_MOVED_FROM: the source of a rename
	fsRemove                  // IN_DELETE
	fsChmod                   // IN_ATTRIB
	numFSKinds
)

var fsKindNames = [numFSKinds]string{"create", "write", "moved_to", "moved_from", "remove", "chmod"}

// watchMask is what fsnotify asks inotify for (so what containerd's CDI
// cache gets to see), without the events of the directory itself.
const watchMask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE | unix.IN_ATTRIB

// classify returns the kind of an inotify event, whether it has one, and
// whether containerd's CDI cache refreshes on it. The cache
// (tags.cncf.io/container-device-interface v1.1.1, pkg/cdi/cache.go, watch)
// gets fsnotify's events: Create (IN_CREATE, IN_MOVED_TO), Write
// (IN_MODIFY), Remove (IN_DELETE), Rename (IN_MOVED_FROM) and Chmod
// (IN_ATTRIB); it ignores Chmod, and names that end neither in .json nor in
// .yaml, and re-reads every spec of its directories on each other event.
func classify(mask uint32, name string) (kind fsKind, ok, refresh bool) {
	switch {
	case mask&unix.IN_CREATE != 0:
		kind = fsCreate
	case mask&unix.IN_MOVED_TO != 0:
		kind = fsMovedTo
	case mask&unix.IN_MODIFY != 0:
		kind = fsWrite
	case mask&unix.IN_DELETE != 0:
		kind = fsRemove
	case mask&unix.IN_MOVED_FROM != 0:
		kind = fsMovedFrom
	case mask&unix.IN_ATTRIB != 0:
		kind = fsChmod
	default:
		return 0, false, false
	}
	ext := filepath.Ext(name)
	return kind, true, kind != fsChmod && (ext == ".json" || ext == ".yaml")
}

// fsCounts are the events of one or more phases.
type fsCounts struct {
	kinds    [numFSKinds]int
	refresh  int // events containerd's CDI cache refreshes on
	overflow int // IN_Q_OVERFLOW: the kernel dropped events, the counts are low
}

func (c *fsCounts) add(o fsCounts) {
	for i := range c.kinds {
		c.kinds[i] += o.kinds[i]
	}
	c.refresh += o.refresh
	c.overflow += o.overflow
}

func (c fsCounts) total() int {
	n := 0
	for _, k := range c.kinds {
		n += k
	}
	return n
}

// inotifyEvent is one event read from an inotify descriptor.
type inotifyEvent struct {
	mask uint32
	name string
}

// parseInotify splits what one read of an inotify descriptor returned into
// events (struct inotify_event, then the name, NUL-padded).
func parseInotify(buf []byte) ([]inotifyEvent, error) {
	var out []inotifyEvent
	for len(buf) > 0 {
		if len(buf) < unix.SizeofInotifyEvent {
			return out, fmt.Errorf("%d bytes left, shorter than an inotify event", len(buf))
		}
		mask := binary.NativeEndian.Uint32(buf[4:8])
		n := int(binary.NativeEndian.Uint32(buf[12:16]))
		if len(buf) < unix.SizeofInotifyEvent+n {
			return out, fmt.Errorf("inotify event name of %d bytes, %d left", n, len(buf)-unix.SizeofInotifyEvent)
		}
		name := buf[unix.SizeofInotifyEvent : unix.SizeofInotifyEvent+n]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		out = append(out, inotifyEvent{mask: mask, name: string(name)})
		buf = buf[unix.SizeofInotifyEvent+n:]
	}
	return out, nil
}

// markPrefix names the marker files the watcher cuts its event stream with;
// they end neither in .json nor in .yaml, so containerd ignores them.
const markPrefix = ".gpudra-bench-mark-"

// cdiWatcher counts the inotify events of a directory between cuts. The
// inotify descriptor is used directly (not through fsnotify, which reports
// IN_MOVED_TO as a Create).
type cdiWatcher struct {
	dir  string
	f    *os.File
	done chan struct{}

	mu    sync.Mutex
	cur   fsCounts
	seq   int
	cuts  map[string]chan fsCounts
	err   error
	close sync.Once
}

func newCDIWatcher(dir string) (*cdiWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, watchMask); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inotify watch of %s: %w", dir, err)
	}
	// Non-blocking, so the runtime's poller serves Read and Close ends it.
	w := &cdiWatcher{dir: dir, f: os.NewFile(uintptr(fd), "inotify:"+dir), done: make(chan struct{}), cuts: map[string]chan fsCounts{}}
	go w.loop()
	return w, nil
}

func (w *cdiWatcher) loop() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
			}
			return
		}
		evs, err := parseInotify(buf[:n])
		w.mu.Lock()
		if err != nil && w.err == nil {
			w.err = err
		}
		for _, e := range evs {
			w.handle(e)
		}
		w.mu.Unlock()
	}
}

// handle counts e, or ends the current count at a marker (w.mu held).
func (w *cdiWatcher) handle(e inotifyEvent) {
	if e.mask&unix.IN_Q_OVERFLOW != 0 {
		w.cur.overflow++
		return
	}
	if strings.HasPrefix(e.name, markPrefix) {
		if ch := w.cuts[e.name]; ch != nil && e.mask&unix.IN_CREATE != 0 {
			ch <- w.cur
			w.cur = fsCounts{}
			delete(w.cuts, e.name)
		}
		return
	}
	kind, ok, refresh := classify(e.mask, e.name)
	if !ok {
		return
	}
	w.cur.kinds[kind]++
	if refresh {
		w.cur.refresh++
	}
}

// cut returns the events since the previous cut. Inotify queues a
// directory's events in order, so a marker file created now ends the
// stream of everything that happened before: cut waits for it.
func (w *cdiWatcher) cut() (fsCounts, error) {
	w.mu.Lock()
	if w.err != nil {
		defer w.mu.Unlock()
		return fsCounts{}, w.err
	}
	w.seq++
	name := fmt.Sprintf("%s%d-%d", markPrefix, os.Getpid(), w.seq)
	ch := make(chan fsCounts, 1)
	w.cuts[name] = ch
	w.mu.Unlock()

	path := filepath.Join(w.dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fsCounts{}, fmt.Errorf("marker file: %w", err)
	}
	f.Close()
	defer os.Remove(path)
	select {
	case c := <-ch:
		return c, nil
	case <-time.After(10 * time.Second):
		return fsCounts{}, fmt.Errorf("no inotify event for marker %s within 10s", path)
	}
}

func (w *cdiWatcher) Close() {
	w.close.Do(func() {
		w.f.Close()
		<-w.done
	})
}
