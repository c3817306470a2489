// Package cli is the plumbing Sluice's command-line tools (to_nsq, nsq_tail,
// nsq_to_file, nsq_to_http, nsq_to_nsq, nsq_stat) share, so that each tool's
// main.go keeps only its own flags and logic. It fixes the NSQ-compatible
// behaviour every tool has:
//
//   - SIGINT and SIGTERM cancel the run's context (Main);
//   - -h/--help prints the usage to stderr and exits 0, an unknown or
//     malformed flag prints the error and usage to stderr and exits 2,
//     --version prints "<tool> v<version> (built w/<go>)" to stdout and
//     exits 0 (Tool.Parse);
//   - a failure is one line "<tool>: <error>" on stderr and exit status 1
//     (Tool.Exit);
//   - logs go to stderr with the "[<tool>] " prefix (Tool.Logger).
//
// Typical run function:
//
//	func run(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
//		t := cli.New(name, stdout, stderr)
//		... define flags on t.Flags ...
//		if code, done := t.Parse(args); done {
//			return code
//		}
//		return t.Exit(work(ctx, o, t.Logger()))
//	}
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/internal/config"
)

// RunFunc is a tool's whole run: it returns the process exit status. ctx is
// cancelled on SIGINT/SIGTERM. Tests call it in-process with their own
// context and buffers.
type RunFunc func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int

// Main is a tool's main: it calls run with the process's arguments and
// standard streams and a context cancelled on SIGINT or SIGTERM, then exits
// with the status run returned.
func Main(run RunFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// VersionUsage is the help text of --version in NSQ's tools (nsq_stat says
// "print version"; it overrides Flags.Lookup("version").Usage).
const VersionUsage = "print version string"

// Tool is one run of a command-line tool: its name, its output streams and
// its flag set, on which New has defined --version.
type Tool struct {
	// Name is the tool's name: the flag set's name, the log prefix, the
	// first word of --version and of the error line.
	Name string
	// Flags is the tool's flag set: ContinueOnError, writing usage and flag
	// errors to stderr.
	Flags *flag.FlagSet

	stdout, stderr io.Writer
	version        *bool
}

// New returns the Tool for one run of the tool called name.
func New(name string, stdout, stderr io.Writer) *Tool {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	t := &Tool{Name: name, Flags: fs, stdout: stdout, stderr: stderr}
	t.version = fs.Bool("version", false, VersionUsage)
	return t
}

// Parse parses args into Flags. When done is true the run is over and the
// tool must return code: 0 after -h/--help (the flag package printed the
// usage) or --version (Parse printed the version line to stdout), 2 after a
// bad flag (the flag package printed the error and the usage).
func (t *Tool) Parse(args []string) (code int, done bool) {
	if err := t.Flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if *t.version {
		fmt.Fprintln(t.stdout, config.VersionLine(t.Name))
		return 0, true
	}
	return 0, false
}

// Logger returns the tool's logger: NSQ-style lines on stderr prefixed with
// "[<name>] ", at info level.
func (t *Tool) Logger() *slog.Logger {
	return config.NewLogger(t.stderr, "["+t.Name+"] ", new(slog.LevelVar))
}

// UserAgent is what the tool called name sends as its go-nsq user agent
// (IDENTIFY) and HTTP User-Agent: "<name>/<version> go-nsq/<go-nsq version>".
func UserAgent(name string) string {
	return fmt.Sprintf("%s/%s go-nsq/%s", name, config.Version, nsq.VERSION)
}

// Exit turns the outcome of the tool's work into its exit status: 0 for a
// nil err; otherwise it writes "<name>: <err>" to stderr and returns 1.
func (t *Tool) Exit(err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(t.stderr, "%s: %v\n", t.Name, err)
	return 1
}
