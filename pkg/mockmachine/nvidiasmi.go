package mockmachine

import (
	_ "embed"
	"fmt"
	"sort"
	"strings"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// nvidiaSMITemplate is the mock nvidia-smi with placeholders for the machine's
// driver and devices.
//
//go:embed nvidia-smi.sh
var nvidiaSMITemplate string

// DevRootEnv names the environment variable that makes the mock nvidia-smi
// look for device nodes under $GPUDRA_MOCK_DEV_ROOT/dev instead of /dev.
const DevRootEnv = "GPUDRA_MOCK_DEV_ROOT"

// NvidiaSMI returns the mock nvidia-smi of inv: a /bin/sh script (busybox is
// enough) that carries inv's GPUs and MIG devices and shows those whose
// device nodes exist, the way nvidia-smi shows a container's GPUs: -L,
// --query-gpu with the common fields, and a short table without arguments.
// The data travels inside the script because the CDI specs mount only the
// driver's files into a container, this one at /usr/bin/nvidia-smi.
func NvidiaSMI(inv *inventory.Inventory) []byte {
	gpus := append([]inventory.Device(nil), inv.Devices...)
	sort.SliceStable(gpus, func(a, b int) bool { return gpus[a].Minor < gpus[b].Minor })
	var g strings.Builder
	for _, d := range gpus {
		mig := "[N/A]"
		if d.MIGCapable {
			mig = "Disabled"
			if d.MIGEnabled {
				mig = "Enabled"
			}
		}
		row(&g, fmt.Sprint(d.Minor), d.ProductName, d.UUID, fmt.Sprint(d.MemoryBytes>>20), nvidiaSMIBusID(d.PCIBusID),
			d.CUDAComputeCapability, mig)
	}
	caps := MIGCapMinors(inv)
	var m strings.Builder
	for _, d := range inv.MIGDevices {
		ci := caps[fmt.Sprintf("gpu%d/gi%d/ci%d/access", d.ParentMinor, d.GPUInstanceID, d.ComputeInstanceID)]
		row(&m, fmt.Sprint(d.ParentMinor), fmt.Sprint(ci), d.Profile, d.UUID)
	}
	return []byte(strings.NewReplacer(
		"@DRIVER_VERSION@", clean(inv.DriverVersion),
		"@CUDA_VERSION@", clean(inv.CUDADriverVersion),
		"@GPUS@", g.String(),
		"@MIGS@", m.String(),
	).Replace(nvidiaSMITemplate))
}

// row appends one "|"-separated line (after a newline, so that the table
// starts on its own line inside the script's quotes).
func row(b *strings.Builder, fields ...string) {
	for i, f := range fields {
		fields[i] = clean(f)
	}
	b.WriteString("\n" + strings.Join(fields, "|"))
}

// clean keeps a value from ending the script's single quotes or a row.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\'' || r == '|' || r < ' ' {
			return ' '
		}
		return r
	}, s)
}

// nvidiaSMIBusID turns the inventory's bus ID ("0000:18:00.0") into
// nvidia-smi's ("00000000:18:00.0").
func nvidiaSMIBusID(id string) string {
	if id == "" {
		return "[N/A]"
	}
	if domain, _, ok := strings.Cut(id, ":"); ok && len(domain) == 4 {
		id = "0000" + id
	}
	return strings.ToUpper(id)
}
