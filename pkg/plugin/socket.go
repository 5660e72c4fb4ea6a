package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
)

// socketMode lets only the socket's owner (root, like the kubelet) connect:
// connecting to a Unix socket needs write permission on it.
const socketMode = 0o600

// listenUnix creates the Unix socket at path for the kubelet plugin helper
// (kubeletplugin.PluginListener and RegistrarListener) with mode socketMode,
// whatever the process umask: with the helper's default listener a umask of
// 0 leaves the sockets writable by every user of the node, who could then
// prepare claims. A stale socket at path is replaced. Closing the listener
// removes the socket file.
func listenUnix(ctx context.Context, path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing the stale socket %s: %w", path, err)
	}
	l, err := (&net.ListenConfig{}).Listen(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, socketMode); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("restricting the socket %s to its owner: %w", path, err)
	}
	return l, nil
}
