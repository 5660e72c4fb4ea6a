package main

import (
	"testing"

	"github.com/gpudra/gpudra/pkg/deviceplugin"
	"github.com/gpudra/gpudra/pkg/gfdlabels"
)

func TestLabelSettings(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  deviceplugin.Config
		want gfdlabels.Settings
	}{
		"none": {deviceplugin.Config{}, gfdlabels.Settings{}},
		"replicas flag": {deviceplugin.Config{Replicas: 3, RenameResource: "nvidia.com/gpu.shared"},
			gfdlabels.Settings{Replicas: 3, Renamed: true, SharingStrategy: gfdlabels.SharingTimeSlicing}},
		"mps": {deviceplugin.Config{MIGStrategy: "mixed", Sharing: deviceplugin.Sharing{Strategy: deviceplugin.SharingMPS,
			Resources: []deviceplugin.ReplicatedResource{{Name: "nvidia.com/gpu", Replicas: 2}}}},
			gfdlabels.Settings{MIGStrategy: "mixed", Replicas: 2, SharingStrategy: gfdlabels.SharingMPS}},
		"only a MIG resource shared": {deviceplugin.Config{MIGStrategy: "mixed", Sharing: deviceplugin.Sharing{
			Resources: []deviceplugin.ReplicatedResource{{Name: "nvidia.com/mig-1g.10gb", Replicas: 4}}}},
			gfdlabels.Settings{MIGStrategy: "mixed"}},
	} {
		t.Run(name, func(t *testing.T) {
			if got := labelSettings(tc.cfg); got != tc.want {
				t.Errorf("labelSettings = %+v, want %+v", got, tc.want)
			}
		})
	}
}
