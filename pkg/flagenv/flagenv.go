// Package flagenv gives command-line flags environment-variable twins, the
// way a DaemonSet configures a process: an explicitly given flag wins over
// its environment variable, which wins over the built-in default.
package flagenv

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

// Set binds flags to environment variables on one FlagSet.
type Set struct {
	fs   *flag.FlagSet
	envs map[string]string // flag name -> environment variable
}

// New returns a Set for fs.
func New(fs *flag.FlagSet) *Set { return &Set{fs: fs, envs: map[string]string{}} }

// String defines a string flag with an environment twin.
func (s *Set) String(p *string, name, env, def, usage string) {
	s.fs.StringVar(p, name, def, s.usage(name, env, usage))
}

// Int defines an int flag with an environment twin.
func (s *Set) Int(p *int, name, env string, def int, usage string) {
	s.fs.IntVar(p, name, def, s.usage(name, env, usage))
}

// Float64 defines a float flag with an environment twin.
func (s *Set) Float64(p *float64, name, env string, def float64, usage string) {
	s.fs.Float64Var(p, name, def, s.usage(name, env, usage))
}

// Bool defines a bool flag with an environment twin. On the command line
// --name alone means true; the environment value is parsed by
// strconv.ParseBool (1, t, true, 0, f, false, ...).
func (s *Set) Bool(p *bool, name, env string, def bool, usage string) {
	s.fs.BoolVar(p, name, def, s.usage(name, env, usage))
}

// Duration defines a time.Duration flag with an environment twin; flag and
// environment values are parsed by time.ParseDuration (e.g. "90s", "5m").
func (s *Set) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	s.fs.DurationVar(p, name, def, s.usage(name, env, usage))
}

// Bind gives an already defined flag (e.g. klog's "v") an environment twin.
func (s *Set) Bind(name, env string) {
	if f := s.fs.Lookup(name); f != nil {
		f.Usage = s.usage(name, env, f.Usage)
	}
}

func (s *Set) usage(name, env, usage string) string {
	s.envs[name] = env
	return fmt.Sprintf("%s [$%s]", usage, env)
}

// Parse parses args, then applies environment variables to the flags not
// given in args. An environment value that does not parse is an error that
// names the variable.
func (s *Set) Parse(args []string) error {
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	s.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, env := range s.envs {
		if given[name] {
			continue
		}
		val, ok := os.LookupEnv(env)
		if !ok || strings.TrimSpace(val) == "" {
			continue
		}
		if err := s.fs.Set(name, val); err != nil {
			return fmt.Errorf("environment variable %s=%q (flag --%s): %w", env, val, name, err)
		}
	}
	return nil
}
