package main

import (
	"fmt"
	"strconv"
	"strings"
)

// sscanBusID parses a PCI bus ID, "[domain:]bus:device.function" in hex,
// and returns how many of its four numbers it set (4: all, a valid ID).
func sscanBusID(id string, domain, bus, dev, fn *uint32) (int, error) {
	parts := strings.Split(id, ":")
	switch len(parts) {
	case 2:
		parts = append([]string{"0"}, parts...)
	case 3:
	default:
		return 0, fmt.Errorf("bus ID %q: want [domain:]bus:device.function", id)
	}
	devFn := strings.SplitN(parts[2], ".", 2)
	if len(devFn) != 2 {
		return 0, fmt.Errorf("bus ID %q: want [domain:]bus:device.function", id)
	}
	fields := []string{parts[0], parts[1], devFn[0], devFn[1]}
	outs := []*uint32{domain, bus, dev, fn}
	for i, f := range fields {
		v, err := strconv.ParseUint(f, 16, 32)
		if err != nil {
			return i, fmt.Errorf("bus ID %q: %w", id, err)
		}
		*outs[i] = uint32(v)
	}
	return 4, nil
}

// formatBusID is the sysfs form, "0000:3b:00.0".
func formatBusID(domain, bus, dev, fn uint32) string {
	return fmt.Sprintf("%04x:%02x:%02x.%x", domain, bus, dev, fn)
}

// formatLegacyBusID is NVML's legacy form, "0000:3B:00.0".
func formatLegacyBusID(domain, bus, dev, fn uint32) string {
	return fmt.Sprintf("%04X:%02X:%02X.%X", domain, bus, dev, fn)
}
