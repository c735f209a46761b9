// Command zerofs serves a filesystem kept in an object store as NBD block
// devices and over NFSv3. See README.md and docs/.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"run", "serve NBD and NFS until SIGTERM or SIGINT, then flush and stop", cmdRun},
		{"init", "write a commented configuration template to FILE or - (stdout)", cmdInit},
		{"nbd", "NBD devices: create, list, resize, delete, clear, clone, restore on a running server; attach, detach on a client (Linux, root)", cmdNBD},
		{"snapshot", "snapshots of the whole filesystem: create, list, delete, hold, release", cmdSnapshot},
		{"status", "show a running server's state", cmdStatus},
		{"change-password", "rewrap the data key under a new password read from stdin", cmdChangePassword},
		{"version", "print the version", cmdVersion},
	}
}

func usage() {
	fmt.Fprintf(os.Stderr, "zerofs %s: NBD block devices and an NFSv3 filesystem on object storage\n\n", version)
	fmt.Fprintf(os.Stderr, "Usage: zerofs COMMAND [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-16s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'zerofs COMMAND --help' for a command's flags.\nQuick start: zerofs init zerofs.toml && zerofs run -c zerofs.toml\n")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	for _, c := range commands {
		if c.name == os.Args[1] {
			err := c.run(os.Args[2:])
			if errors.Is(err, flag.ErrHelp) {
				return
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "zerofs %s: %v\n", c.name, err)
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "zerofs: unknown command %q\n\n", os.Args[1])
	usage()
	os.Exit(2)
}

// parseFlags parses flags that may come before, between or after positional
// arguments ("zerofs nbd create db --size 20G" as well as "--size 20G db").
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlags(name, usageLine string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package's own error line is dropped: main prints the error
	// once, after the usage.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: zerofs %s\n\nFlags:\n", usageLine)
		fs.SetOutput(os.Stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parseSize reads sizes like "100G", "20GiB", "512M", "4096" (binary units,
// as truncate(1) does).
func parseSize(s string) (uint64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := uint64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGTPE", t[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:n-1]
		}
	}
	var v uint64
	if _, err := fmt.Sscanf(t, "%d", &v); err != nil || t == "" || strings.ContainsAny(t, " .+-") {
		return 0, fmt.Errorf("size %q: use a number with an optional unit K, M, G, T, P (binary), e.g. 100G", s)
	}
	if v > (1<<64-1)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return v * mult, nil
}

func cmdVersion(args []string) error {
	fmt.Println("zerofs", version)
	return nil
}
