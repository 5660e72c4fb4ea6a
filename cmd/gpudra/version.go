package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs, f := newFlagSet("version", stderr, nil, 0)
	if err := parse(f, fs, args); err != nil {
		return exitUsage, err
	}
	fmt.Fprintf(stdout, "gpudra %s\n%s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK, nil
}
