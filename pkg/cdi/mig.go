package cdi

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"tags.cncf.io/container-device-interface/specs-go"
)

// MIGMinorsPath is where the NVIDIA driver lists the minor numbers of the
// MIG capability device nodes /dev/nvidia-caps/nvidia-cap<minor>.
const MIGMinorsPath = "/proc/driver/nvidia-caps/mig-minors"

// MIGCapsDir is the directory of the MIG capability device nodes.
const MIGCapsDir = "/dev/nvidia-caps"

// MIGDevice identifies a MIG device for its container edits.
type MIGDevice struct {
	// UUID is the MIG device's UUID, "MIG-...".
	UUID string
	// ParentUUID is the UUID of its GPU.
	ParentUUID string
	// ParentMinor is the minor number of its GPU, /dev/nvidia<minor>.
	ParentMinor int
	// GPUInstanceID and ComputeInstanceID are the MIG instance IDs.
	GPUInstanceID     int
	ComputeInstanceID int
}

// MIGCaps maps a MIG capability ("gpu0/gi1/access", "gpu0/gi1/ci0/access")
// to the minor number of its device node.
type MIGCaps map[string]int

// GPUInstanceCap and ComputeInstanceCap name the capabilities that give
// access to a MIG device's GPU instance and compute instance.
func GPUInstanceCap(gpuMinor, gi int) string { return fmt.Sprintf("gpu%d/gi%d/access", gpuMinor, gi) }

// ComputeInstanceCap: see GPUInstanceCap.
func ComputeInstanceCap(gpuMinor, gi, ci int) string {
	return fmt.Sprintf("gpu%d/gi%d/ci%d/access", gpuMinor, gi, ci)
}

// ReadMIGCaps reads a mig-minors file (MIGMinorsPath on a real node).
func ReadMIGCaps(file string) (MIGCaps, error) {
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("MIG capability minors file %s does not exist: is the nvidia-caps kernel support loaded "+
			"(the driver creates it with MIG support)?", file)
	}
	if err != nil {
		return nil, fmt.Errorf("reading MIG capability minors: %w", err)
	}
	defer f.Close()
	caps, err := ParseMIGCaps(f)
	if err != nil {
		return nil, fmt.Errorf("reading MIG capability minors %s: %w", file, err)
	}
	return caps, nil
}

// ParseMIGCaps parses the "<capability> <minor>" lines of a mig-minors
// file. Empty lines are skipped; any other malformed line is an error.
func ParseMIGCaps(r io.Reader) (MIGCaps, error) {
	caps := MIGCaps{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		name, minor, ok := strings.Cut(line, " ")
		m, err := strconv.Atoi(strings.TrimSpace(minor))
		if !ok || err != nil || m < 0 {
			return nil, fmt.Errorf("line %d %q: want \"<capability> <minor>\"", n, line)
		}
		caps[name] = m
	}
	return caps, sc.Err()
}

// MIGDeviceEdits returns the container edits of MIG device m: the edits of
// its parent GPU (its device node and anything else nvcdi gives the GPU)
// plus the device nodes of its GPU instance and compute instance
// capabilities. The capability nodes get the same host prefix as the
// parent's /dev/nvidia<minor> node, so a relocated device root stays
// consistent. The result shares no slices with parent.
func MIGDeviceEdits(parent specs.ContainerEdits, m MIGDevice, caps MIGCaps) (specs.ContainerEdits, error) {
	out := CloneEdits(parent)
	hostPrefix := ""
	gpuNode := fmt.Sprintf("/dev/nvidia%d", m.ParentMinor)
	for _, n := range parent.DeviceNodes {
		if n.Path == gpuNode && n.HostPath != "" && strings.HasSuffix(n.HostPath, gpuNode) {
			hostPrefix = strings.TrimSuffix(n.HostPath, gpuNode)
		}
	}
	for _, c := range []string{GPUInstanceCap(m.ParentMinor, m.GPUInstanceID), ComputeInstanceCap(m.ParentMinor, m.GPUInstanceID, m.ComputeInstanceID)} {
		minor, ok := caps[c]
		if !ok {
			return specs.ContainerEdits{}, fmt.Errorf("MIG device %s: capability %s is not in the MIG minors file: "+
				"the MIG device was probably deleted or re-created since the plugin started; restart the plugin to publish the current MIG devices", m.UUID, c)
		}
		p := path.Join(MIGCapsDir, "nvidia-cap"+strconv.Itoa(minor))
		node := &specs.DeviceNode{Path: p}
		if hostPrefix != "" {
			node.HostPath = hostPrefix + p
		}
		out.DeviceNodes = append(out.DeviceNodes, node)
	}
	return out, nil
}

// DeviceEdits gives the container edits of a device by UUID; *Edits
// implements it.
type DeviceEdits interface {
	Common() specs.ContainerEdits
	Device(uuid string) (specs.ContainerEdits, error)
}

// WithMIG wraps base so that Device also answers for the MIG devices in
// migs: a MIG UUID gets MIGDeviceEdits of its parent's edits; any other
// UUID is passed to base. The caps are read once, here. With no MIG
// devices it returns base unchanged and reads nothing.
func WithMIG(base DeviceEdits, migs []MIGDevice, minorsFile string) (DeviceEdits, error) {
	if len(migs) == 0 {
		return base, nil
	}
	if minorsFile == "" {
		minorsFile = MIGMinorsPath
	}
	caps, err := ReadMIGCaps(minorsFile)
	if err != nil {
		return nil, err
	}
	return WithMIGCaps(base, migs, caps)
}

// WithMIGCaps is WithMIG with the capability minors given instead of read
// from a file (mock backends without a mock host). Every MIG device's edits
// are computed here, so a missing capability fails now, not at a prepare.
func WithMIGCaps(base DeviceEdits, migs []MIGDevice, caps MIGCaps) (DeviceEdits, error) {
	if len(migs) == 0 {
		return base, nil
	}
	return withMIGCaps(base, migs, caps)
}

// MIGEdits is DeviceEdits that also gives the edits of MIG devices created
// after it was built (dynamic MIG).
type MIGEdits interface {
	DeviceEdits
	// MIGDevice returns MIGDeviceEdits of m over its parent's edits.
	MIGDevice(m MIGDevice) (specs.ContainerEdits, error)
}

// WithDynamicMIGCaps is WithMIGCaps for a node whose MIG devices are also
// made on demand: the result always implements MIGEdits, with caps
// holding every capability of the node's MIG-capable GPUs (the driver's
// mig-minors file lists them all, existing instances or not).
func WithDynamicMIGCaps(base DeviceEdits, migs []MIGDevice, caps MIGCaps) (MIGEdits, error) {
	return withMIGCaps(base, migs, caps)
}

func withMIGCaps(base DeviceEdits, migs []MIGDevice, caps MIGCaps) (*migEdits, error) {
	w := &migEdits{DeviceEdits: base, caps: caps, migs: map[string]MIGDevice{}}
	for _, m := range migs {
		w.migs[m.UUID] = m
		if _, err := w.Device(m.UUID); err != nil {
			return nil, err
		}
	}
	return w, nil
}

type migEdits struct {
	DeviceEdits
	caps MIGCaps
	migs map[string]MIGDevice
}

func (w *migEdits) MIGDevice(m MIGDevice) (specs.ContainerEdits, error) {
	parent, err := w.DeviceEdits.Device(m.ParentUUID)
	if err != nil {
		return specs.ContainerEdits{}, fmt.Errorf("MIG device %s: %w", m.UUID, err)
	}
	return MIGDeviceEdits(parent, m, w.caps)
}

func (w *migEdits) Device(uuid string) (specs.ContainerEdits, error) {
	m, ok := w.migs[uuid]
	if !ok {
		return w.DeviceEdits.Device(uuid)
	}
	parent, err := w.DeviceEdits.Device(m.ParentUUID)
	if err != nil {
		return specs.ContainerEdits{}, fmt.Errorf("MIG device %s: %w", uuid, err)
	}
	return MIGDeviceEdits(parent, m, w.caps)
}
