package flagenv

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestPrecedenceFlagOverEnvOverDefault(t *testing.T) {
	t.Setenv("T_NODE", "from-env")
	t.Setenv("T_ROOT", "/env/root")
	t.Setenv("T_QPS", "50")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	s := New(fs)
	var node, root, unset string
	var qps int
	s.String(&node, "node", "T_NODE", "default-node", "")
	s.String(&root, "root", "T_ROOT", "/", "")
	s.String(&unset, "unset", "T_UNSET", "dflt", "")
	s.Int(&qps, "qps", "T_QPS", 5, "")
	if err := s.Parse([]string{"--root=/flag/root"}); err != nil {
		t.Fatal(err)
	}
	if node != "from-env" || root != "/flag/root" || unset != "dflt" || qps != 50 {
		t.Errorf("node=%q root=%q unset=%q qps=%d", node, root, unset, qps)
	}
}

func TestBadEnvValueNamesTheVariable(t *testing.T) {
	t.Setenv("T_QPS", "lots")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := New(fs)
	var qps int
	s.Int(&qps, "qps", "T_QPS", 5, "")
	err := s.Parse(nil)
	if err == nil || !strings.Contains(err.Error(), "T_QPS") || !strings.Contains(err.Error(), "--qps") {
		t.Errorf("err = %v", err)
	}
}

func TestBindExistingFlag(t *testing.T) {
	t.Setenv("T_V", "4")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	v := fs.Int("v", 0, "verbosity")
	s := New(fs)
	s.Bind("v", "T_V")
	if err := s.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if *v != 4 {
		t.Errorf("v = %d", *v)
	}
	if !strings.Contains(fs.Lookup("v").Usage, "$T_V") {
		t.Errorf("usage %q does not name the variable", fs.Lookup("v").Usage)
	}
}

// newBoolDuration returns a Set with one Bool flag (--mock, $T_MOCK, default
// false) and one Duration flag (--interval, $T_INTERVAL, default 30s).
func newBoolDuration(t *testing.T) (*flag.FlagSet, *Set, *bool, *time.Duration) {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := New(fs)
	var mock bool
	var interval time.Duration
	s.Bool(&mock, "mock", "T_MOCK", false, "use the mock backend")
	s.Duration(&interval, "interval", "T_INTERVAL", 30*time.Second, "poll interval")
	return fs, s, &mock, &interval
}

func TestBoolAndDurationPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name         string
		env          map[string]string
		args         []string
		wantMock     bool
		wantInterval time.Duration
	}{
		{name: "defaults", wantMock: false, wantInterval: 30 * time.Second},
		{name: "empty env is unset", env: map[string]string{"T_MOCK": "", "T_INTERVAL": " "},
			wantMock: false, wantInterval: 30 * time.Second},
		{name: "env over default", env: map[string]string{"T_MOCK": "true", "T_INTERVAL": "5m"},
			wantMock: true, wantInterval: 5 * time.Minute},
		{name: "env 1 is true", env: map[string]string{"T_MOCK": "1"},
			wantMock: true, wantInterval: 30 * time.Second},
		{name: "flag over env", env: map[string]string{"T_MOCK": "true", "T_INTERVAL": "5m"},
			args: []string{"--mock=false", "--interval=90s"}, wantMock: false, wantInterval: 90 * time.Second},
		{name: "flag over default", args: []string{"--mock=true", "--interval", "2s"},
			wantMock: true, wantInterval: 2 * time.Second},
		{name: "bool flag alone", args: []string{"--mock"},
			wantMock: true, wantInterval: 30 * time.Second},
		{name: "bool flag alone over env false", env: map[string]string{"T_MOCK": "false"}, args: []string{"--mock"},
			wantMock: true, wantInterval: 30 * time.Second},
		{name: "flag given as its default still wins", env: map[string]string{"T_INTERVAL": "1h"},
			args: []string{"--interval=30s"}, wantMock: false, wantInterval: 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, s, mock, interval := newBoolDuration(t)
			if err := s.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if *mock != tc.wantMock || *interval != tc.wantInterval {
				t.Errorf("mock=%v interval=%v, want mock=%v interval=%v", *mock, *interval, tc.wantMock, tc.wantInterval)
			}
		})
	}
}

func TestBoolAndDurationBadEnvValue(t *testing.T) {
	for _, tc := range []struct {
		env, val, flag string
	}{
		{env: "T_MOCK", val: "maybe", flag: "--mock"},
		{env: "T_INTERVAL", val: "soon", flag: "--interval"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, tc.val)
			_, s, _, _ := newBoolDuration(t)
			err := s.Parse(nil)
			if err == nil {
				t.Fatalf("%s=%s: no error", tc.env, tc.val)
			}
			for _, want := range []string{tc.env, tc.flag, tc.val} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err %q does not name %q", err, want)
				}
			}
		})
	}
}

func TestBoolAndDurationUsageNamesTheVariable(t *testing.T) {
	fs, _, _, _ := newBoolDuration(t)
	for flagName, env := range map[string]string{"mock": "$T_MOCK", "interval": "$T_INTERVAL"} {
		f := fs.Lookup(flagName)
		if f == nil {
			t.Fatalf("flag --%s not defined", flagName)
		}
		if !strings.Contains(f.Usage, env) {
			t.Errorf("--%s usage %q does not name %s", flagName, f.Usage, env)
		}
	}
	if f := fs.Lookup("mock"); f.DefValue != "false" {
		t.Errorf("--mock default %q", f.DefValue)
	}
	if f := fs.Lookup("interval"); f.DefValue != "30s" {
		t.Errorf("--interval default %q", f.DefValue)
	}
}
