package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/flagenv"
	"github.com/gpudra/gpudra/pkg/node"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // a check failed, or the command could not do its job
	exitUsage = 2
)

const usage = `gpudra: host tool of the gpudra GPU driver.

Usage:
  gpudra cdi generate [--output FILE] [--format yaml|json] [flags]
  gpudra cdi list [--device NAME] [--json] [flags]
  gpudra doctor [--json] [flags]
  gpudra slices delete [--driver NAME] [--wait-for-pods SELECTOR --namespace NS]
  gpudra version

Run "gpudra <command> -h" for a command's flags. Every flag has an
environment variable twin (shown in -h), the way the plugins are configured.
`

// errUsage marks errors that exit with exitUsage.
var errUsage = errors.New("usage error")

// command is one subcommand; it returns the exit code.
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error)

// run dispatches args to a subcommand and returns the process's exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	commands := map[string]command{
		"cdi generate":  runCDIGenerate,
		"cdi list":      runCDIList,
		"doctor":        runDoctor,
		"slices delete": runSlicesDelete,
		"version":       runVersion,
	}
	name, rest := commandName(args)
	if name == "help" || name == "-h" || name == "--help" {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "gpudra: unknown command %q\n\n%s", strings.TrimSpace(strings.Join(args, " ")), usage)
		return exitUsage
	}
	code, err := cmd(ctx, rest, stdout, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "gpudra %s: %v\n", name, err)
		return exitUsage
	case err != nil:
		fmt.Fprintf(stderr, "gpudra %s: %v\n", name, err)
		return exitFail
	}
	return code
}

// commandName splits "cdi generate ..." and "doctor ..." into the command
// and its arguments.
func commandName(args []string) (string, []string) {
	switch {
	case len(args) == 0:
		return "", nil
	case (args[0] == "cdi" || args[0] == "slices") && len(args) > 1:
		return args[0] + " " + args[1], args[2:]
	}
	return args[0], args[1:]
}

// hostFlags are the flags every host-facing command shares: the node's
// flag group (node.Flags, the plugins' flags and environment variables),
// the host root and the node name.
type hostFlags struct {
	node     node.Flags
	hostRoot string
	nodeName string
}

// newFlagSet returns a command's flag set with -v and, when h is set, the
// shared flags of groups.
func newFlagSet(name string, stderr io.Writer, h *hostFlags, groups node.FlagGroup) (*flag.FlagSet, *flagenv.Set) {
	fs := flag.NewFlagSet("gpudra "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := flagenv.New(fs)
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.Var(klogFlags.Lookup("v").Value, "v", "log verbosity (logs go to stderr)")
	f.Bind("v", "VERBOSITY")
	if h != nil {
		f.String(&h.hostRoot, "host-root", "HOST_ROOT", "/", "where the host's / is seen: host paths (configs, /dev, CDI spec directories, paths named in specs, --mock-host-root) are read under it; /host in the chart's init container")
		h.node.AddFlags(f, groups)
		f.String(&h.nodeName, "node-name", "NODE_NAME", "", "node name; seeds the mock GPUs' UUIDs as in the plugin")
	}
	return fs, f
}

// openNode opens the node as the plugins do, without changing anything on
// it (node.HostTool).
func (h *hostFlags) openNode(ctx context.Context, edits bool) (*node.Node, error) {
	return node.Open(ctx, h.node, node.Options{Mode: node.HostTool, Seed: h.nodeName, HostRoot: h.hostRoot, Edits: edits})
}

// validate turns the node flags' usage errors into errUsage.
func (h *hostFlags) validate() error {
	if err := h.node.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// parse parses args and refuses positional arguments.
func parse(f *flagenv.Set, fs *flag.FlagSet, args []string) error {
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// logContext gives the command a contextual logger.
func logContext(ctx context.Context, name string) context.Context {
	return klog.NewContext(ctx, klog.Background().WithName("gpudra").WithName(name))
}
