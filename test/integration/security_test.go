package integration

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
)

// TestFileAndSocketModesIgnoreTheUmask starts the plugin with umask 0, the
// worst a container runtime can hand it, and checks what it creates: spec
// files 0644 (the runtime reads them, only root writes them), checkpoint
// directory 0750 and records 0600, everything owned by the plugin's user
// (root on a node), and sockets that no other user can connect to (connect
// needs write permission on the socket).
func TestFileAndSocketModesIgnoreTheUmask(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	h := newHarness(t)
	// A claim with settings of its own, so that it has a claim spec.
	c := h.store(withConfig(allocated("modes", "uid-modes", "gpu-2"), driverName, timeSlicingConfig))
	resp, err := h.draClient().NodePrepareResources(h.ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}})
	if err != nil || resp.Claims[string(c.UID)].Error != "" {
		t.Fatalf("%v %+v", err, resp)
	}
	data := h.cfg.PluginDataDir()
	for _, tc := range []struct {
		path string
		want os.FileMode // exact permission bits; 0 for sockets (see below)
	}{
		{filepath.Join(h.cfg.Node.CDIRoot, "k8s.gpu.nvidia.com-claim_uid-modes.json"), 0o644},
		{filepath.Join(h.cfg.Node.CDIRoot, "k8s.gpu.nvidia.com-device.json"), 0o644},
		{filepath.Join(h.cfg.Node.CDIRoot, "k8s.gpu.nvidia.com-driver.json"), 0o644},
		{h.cfg.Node.CDIRoot, 0o755},
		{filepath.Join(h.cfg.Node.CDIRoot, ".k8s.gpu.nvidia.com.staging"), 0o755},
		{filepath.Join(data, "claims"), 0o750},
		{filepath.Join(data, "claims", "uid-modes.json"), 0o600},
		{filepath.Join(data, "dra.sock"), 0},
		{filepath.Join(h.cfg.Kubelet.RegistrarDir, driverName+"-reg.sock"), 0},
	} {
		fi, err := os.Lstat(tc.path)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
			t.Errorf("%s is not owned by the plugin's user %d: %+v", tc.path, os.Geteuid(), fi.Sys())
		}
		perm := fi.Mode().Perm()
		if tc.want != 0 {
			if perm != tc.want {
				t.Errorf("%s has mode %v, want %v", tc.path, perm, tc.want)
			}
			continue
		}
		if fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("%s is not a socket: %v", tc.path, fi.Mode())
		}
		if perm&0o022 != 0 {
			t.Errorf("socket %s has mode %v: group or others can connect and drive the plugin", tc.path, perm)
		}
	}
	if fi, err := os.Stat(data); err != nil || fi.Mode().Perm()&0o022 != 0 {
		t.Errorf("plugin data directory %s: %v %v, want no write access for group and others", data, fi, err)
	}
}

// TestClaimUIDsAreValidatedBeforeFileNames: a claim UID with path
// characters never reaches a file name, neither in prepare (see
// TestBadClaimsFailAloneWithClearErrors) nor in unprepare, where it could
// otherwise delete a file outside the plugin's directories.
func TestClaimUIDsAreValidatedBeforeFileNames(t *testing.T) {
	h := newHarness(t)
	// The files that "../" UIDs would name after path cleaning.
	victims := []string{
		filepath.Join(h.cfg.Node.CDIRoot, "victim.json"),
		filepath.Join(h.cfg.PluginDataDir(), "victim.json"),
		filepath.Join(h.cfg.Kubelet.PluginsDir, "victim.json"),
	}
	for _, v := range victims {
		if err := os.WriteFile(v, []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var claims []*drapb.Claim
	for _, uid := range []string{"../../victim", "../victim", "x/../../victim", "/abs/victim", "..", ""} {
		claims = append(claims, &drapb.Claim{Namespace: "default", Name: "evil", Uid: uid})
	}
	if _, err := h.draClient().NodeUnprepareResources(h.ctx, &drapb.NodeUnprepareResourcesRequest{Claims: claims}); err != nil {
		t.Fatal(err)
	}
	for _, v := range victims {
		if _, err := os.Stat(v); err != nil {
			t.Errorf("unprepare of a claim UID with path characters removed %s: %v", v, err)
		}
	}
}
