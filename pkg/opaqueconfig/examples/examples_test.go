package examples

import (
	"testing"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/opaqueconfig"
)

// check returns the error that prepare gives for params: that of Decode, or
// else of Validate after Normalize; "" when they are valid.
func check(params string) string {
	obj, err := opaqueconfig.Decode([]byte(params))
	if err != nil {
		return err.Error()
	}
	cfg := obj.(configapi.Config)
	cfg.Normalize()
	if err := cfg.Validate(); err != nil {
		return err.Error()
	}
	return ""
}

func TestInvalidConfigsFailWithTheirError(t *testing.T) {
	seen := map[string]bool{}
	for _, ex := range InvalidConfigs {
		if seen[ex.Name] {
			t.Errorf("two invalid examples are named %q", ex.Name)
		}
		seen[ex.Name] = true
		if got := check(ex.Params); got != ex.Err {
			t.Errorf("invalid example %q: the decoder says\n  %q\nthe table says\n  %q", ex.Name, got, ex.Err)
		}
	}
}

func TestValidConfigsPass(t *testing.T) {
	seen := map[string]bool{}
	for _, ex := range ValidConfigs {
		if seen[ex.Name] {
			t.Errorf("two valid examples are named %q", ex.Name)
		}
		seen[ex.Name] = true
		if got := check(ex.Params); got != "" {
			t.Errorf("valid example %q: %s", ex.Name, got)
		}
	}
}
