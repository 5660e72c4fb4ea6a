package health

import (
	"flag"
	"reflect"
	"testing"
	"time"

	"github.com/gpudra/gpudra/pkg/flagenv"
)

func parseFlags(t *testing.T, args ...string) (*Flags, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var f Flags
	env := flagenv.New(fs)
	f.AddFlags(env)
	if err := env.Parse(args); err != nil {
		t.Fatal(err)
	}
	_, err := f.Options()
	return &f, err
}

func TestFlagDefaults(t *testing.T) {
	f, err := parseFlags(t)
	if err != nil {
		t.Fatal(err)
	}
	opts, _ := f.Options()
	if !f.Enabled || opts.ReplaceIgnoredXIDs || opts.RecoveryPeriod != 0 || len(opts.AdditionalIgnoredXIDs) != 0 {
		t.Errorf("defaults: enabled=%v options=%+v", f.Enabled, opts)
	}
}

func TestFlagsAndEnvironment(t *testing.T) {
	t.Setenv("HEALTH_IGNORED_XIDS", "48,63")
	t.Setenv("HEALTH_REPLACE_IGNORED_XIDS", "true")
	t.Setenv("HEALTH_MONITOR", "false")
	f, err := parseFlags(t, "--health-recovery-period=10m")
	if err != nil {
		t.Fatal(err)
	}
	opts, _ := f.Options()
	want := Options{AdditionalIgnoredXIDs: []uint64{48, 63}, ReplaceIgnoredXIDs: true, RecoveryPeriod: 10 * time.Minute}
	if f.Enabled || !reflect.DeepEqual(opts, want) {
		t.Errorf("enabled=%v options=%+v, want disabled and %+v", f.Enabled, opts, want)
	}
	for _, args := range [][]string{{"--health-recovery-period=-1s"}, {"--health-recovery-period=soon"}, {"--health-ignored-xids=13,x"}} {
		if _, err := parseFlags(t, args...); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
