package flagenv

import (
	"flag"
	"io"
	"strings"
	"testing"
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
