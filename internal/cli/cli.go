// Package cli is the command line every binary shares: subcommand dispatch
// (CLI and its Command table), flags, help, the status subcommand's
// plumbing, and how errors become exit statuses. What the binaries are
// configured with, and how it is read from the environment, is
// internal/config.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
)

// Exit statuses shared by every binary.
const (
	ExitOK      = 0 // done, or help was asked for
	ExitFailure = 1 // the work failed at run time (a dependency down, a refused write)
	ExitUsage   = 2 // the command line or the configuration is wrong; nothing was attempted
	ExitGap     = 3 // an audit ran to the end and found a gap (see GapError)
)

// GapError is the verdict of a check that ran to the end and found what it
// looks for (an audit's missing or unapplied events): the process exits with
// ExitGap, so a script can tell "found a gap" from "could not check".
type GapError struct{ Err error }

func (e *GapError) Error() string { return e.Err.Error() }
func (e *GapError) Unwrap() error { return e.Err }

// UsageError is a mistake in the command line or the configuration: the
// process prints it as one line and exits with ExitUsage.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// AsUsage marks err as a UsageError; nil, a help request and a UsageError
// are returned as they are.
func AsUsage(err error) error {
	var ue *UsageError
	if err == nil || errors.Is(err, flag.ErrHelp) || errors.As(err, &ue) {
		return err
	}
	return &UsageError{Err: err}
}

// PrintVersion answers a binary without subcommands: when args is
// ["version"] or ["--version"] it prints the build (see Build) to w and
// returns true.
func PrintVersion(w io.Writer, name string, args []string) bool {
	if len(args) != 1 || (args[0] != "version" && args[0] != "-version" && args[0] != "--version") {
		return false
	}
	fmt.Fprintf(w, "%s %s\n", name, config.ReadBuild())
	return true
}

// ExitCode is the exit status for a binary's result: ExitOK for nil and for
// a help request (flag.ErrHelp), ExitUsage for a UsageError, ExitGap for a
// GapError, ExitFailure for anything else.
func ExitCode(err error) int {
	var ue *UsageError
	var ge *GapError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &ge):
		return ExitGap
	}
	return ExitFailure
}

// Report prints err to w once, prefixed with the binary's name (nothing for
// success or a help request), and returns the exit status for it.
func Report(w io.Writer, name string, err error) int {
	code := ExitCode(err)
	if code != ExitOK {
		fmt.Fprintf(w, "%s: %v\n", name, err)
	}
	return code
}

// Exec runs a binary's entry point under a context that SIGINT and SIGTERM
// cancel, prints a returned error once and exits with its ExitCode.
func Exec(name string, run func(ctx context.Context, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	os.Exit(Report(os.Stderr, name, err))
}

// ParseFlags parses args with fs without letting the flag package print:
// -h or --help calls help and returns flag.ErrHelp; an unknown flag or a bad
// value is a UsageError naming it and the valid flags, in one line.
func ParseFlags(fs *flag.FlagSet, args []string, help func()) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	badValue := false
	fs.VisitAll(func(f *flag.Flag) { f.Value = &watchedValue{Value: f.Value, failed: &badValue} })
	err := fs.Parse(args)
	// The help describes a flag by the type of its value: put them back.
	fs.VisitAll(func(f *flag.Flag) { f.Value = f.Value.(*watchedValue).Value })
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		help()
		return flag.ErrHelp
	case badValue: // the message names the flag and the value; the flags are right
		return Usagef("%w (see %s --help)", err, fs.Name())
	}
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
	valid := fs.Name() + " takes no flags"
	if len(names) > 0 {
		valid = "valid flags: " + strings.Join(names, ", ")
	}
	return Usagef("%w; %s (see %s --help)", err, valid, fs.Name())
}

// watchedValue notes that a flag's value was refused, to tell a bad value
// from an unknown flag.
type watchedValue struct {
	flag.Value
	failed *bool
}

func (v *watchedValue) String() string {
	if v == nil || v.Value == nil {
		return ""
	}
	return v.Value.String()
}

func (v *watchedValue) Set(s string) error {
	err := v.Value.Set(s)
	if err != nil {
		*v.failed = true
	}
	return err
}

// IsBoolFlag keeps a boolean flag usable without a value (--json).
func (v *watchedValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Validator is a configuration that checks itself.
type Validator interface{ Validate() error }

// OneShotEnv are the variables every one-shot command (status, dlq, ...)
// reads: where to connect, the names subjects and streams derive from, and
// logging (LOG_LEVEL=debug shows the connection attempts).
var OneShotEnv = []string{"DATABASE_URL", "NATS_URLS", "NATS_CREDS", "NATS_NKEY_SEED", "NATS_USER", "NATS_PASSWORD",
	"NATS_TOKEN", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY", "APP_NAME", "DESTINATION_APP", "ENV_NAME",
	"JETSTREAM_STREAM_NAME", "LOG_LEVEL", "LOG_FORMAT"}

// Command is one subcommand of a binary. A binary's commands are a table
// (CLI.Commands): dispatch, the binary's help and the command's own help all
// come from its entry, so adding a command is adding an entry.
type Command struct {
	Name    string   // as typed after the binary; "dlq list" is list in the group dlq
	Args    string   // synopsis of its flags and arguments, e.g. "[--json] [--watch=2s]"
	Summary string   // one line for the binary's help
	Detail  string   // more for its own help (optional)
	Env     []string // the variables it reads; nil means the whole configuration
	Example string   // command lines, one a line
	// Run runs the command. It parses its flags with CLI.Flags before it
	// does anything else: `help NAME` runs it with --help and relies on that.
	Run func(ctx context.Context, args []string) error
}

// CLI is the command-line scaffolding the bridge binaries share: subcommand
// dispatch, flags, help with the environment variables, the version, and
// loading the configuration.
type CLI struct {
	Name           string    // the binary, e.g. "relay"
	Summary        string    // what the binary does, first in its help
	Commands       []Command // the first runs when no command is named
	Stdout, Stderr io.Writer
	Environ        map[string]string // nil = the process environment
	Config         any               // pointer to a zero configuration, for the environment list
}

// Check reports mistakes in the command table: no commands, a name given
// twice, a command without Run or Summary, a variable in Env that the
// configuration does not have. Each binary's tests call it.
func (c *CLI) Check() error {
	if len(c.Commands) == 0 {
		return errors.New("no commands")
	}
	known := config.EnvNames(c.Config)
	seen := map[string]bool{}
	var errs []error
	for _, cmd := range c.Commands {
		if seen[cmd.Name] {
			errs = append(errs, fmt.Errorf("command %q given twice", cmd.Name))
		}
		seen[cmd.Name] = true
		if cmd.Run == nil || cmd.Summary == "" {
			errs = append(errs, fmt.Errorf("command %q: Run and Summary are required", cmd.Name))
		}
		for _, n := range cmd.Env {
			if !slices.Contains(known, n) {
				errs = append(errs, fmt.Errorf("command %q: Env names %s, which the configuration does not have", cmd.Name, n))
			}
		}
	}
	return errors.Join(errs...)
}

// Dispatch runs the command args name (the first command when args is
// empty), or answers help and version itself.
func (c *CLI) Dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return c.Commands[0].Run(ctx, nil)
	}
	switch a := args[0]; {
	case isHelp(a):
		c.Usage()
		return flag.ErrHelp
	case a == "help":
		return c.help(ctx, args[1:])
	case PrintVersion(c.Stdout, c.Name, args):
		return nil
	case a == "version" || a == "-version" || a == "--version":
		return Usagef("%s: unexpected argument %q (it takes none)", a, args[1])
	case strings.HasPrefix(a, "-"):
		return Usagef("unknown flag %s; valid: --help, --version, or a command: %s (see %s --help)",
			a, strings.Join(c.topNames(), ", "), c.Name)
	}
	cmd, rest, err := c.lookup(args)
	if err != nil {
		return err
	}
	return cmd.Run(ctx, rest)
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// help answers `NAME help [COMMAND]`.
func (c *CLI) help(ctx context.Context, args []string) error {
	if len(args) == 0 {
		c.Usage()
		return nil
	}
	if len(args) == 1 && len(c.group(args[0])) > 0 {
		c.groupUsage(args[0])
		return nil
	}
	cmd, rest, err := c.lookup(args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return Usagef("help: unexpected argument %q (see %s help)", rest[0], c.Name)
	}
	if err := cmd.Run(ctx, []string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		return err
	}
	return nil
}

// lookup finds the command args name and returns it with its arguments.
func (c *CLI) lookup(args []string) (*Command, []string, error) {
	name := args[0]
	if cmd := c.find(name); cmd != nil {
		return cmd, args[1:], nil
	}
	subs := c.group(name)
	if len(subs) == 0 {
		return nil, nil, Usagef("unknown command %q; valid commands: %s (see %s --help)",
			name, strings.Join(c.topNames(), ", "), c.Name)
	}
	switch {
	case len(args) < 2:
		return nil, nil, Usagef("%s: expected a command: %s (see %s %s --help)", name, strings.Join(subs, ", "), c.Name, name)
	case isHelp(args[1]):
		c.groupUsage(name)
		return nil, nil, flag.ErrHelp
	}
	if cmd := c.find(name + " " + args[1]); cmd != nil {
		return cmd, args[2:], nil
	}
	return nil, nil, Usagef("%s: unknown command %q; valid commands: %s (see %s %s --help)",
		name, args[1], strings.Join(subs, ", "), c.Name, name)
}

func (c *CLI) find(name string) *Command {
	for i := range c.Commands {
		if c.Commands[i].Name == name {
			return &c.Commands[i]
		}
	}
	return nil
}

// group lists the commands of the group name ("list" and "replay" of "dlq").
func (c *CLI) group(name string) []string {
	var subs []string
	for _, cmd := range c.Commands {
		if g, sub, ok := strings.Cut(cmd.Name, " "); ok && g == name {
			subs = append(subs, sub)
		}
	}
	return subs
}

// topNames lists what may follow the binary's name.
func (c *CLI) topNames() []string {
	var names []string
	for _, cmd := range c.Commands {
		g, _, _ := strings.Cut(cmd.Name, " ")
		if len(names) == 0 || names[len(names)-1] != g {
			names = append(names, g)
		}
	}
	return append(names, "version", "help")
}

// Usage prints the binary's help: its commands, the conventions and every
// environment variable with its default.
func (c *CLI) Usage() {
	w := c.Stdout
	fmt.Fprintf(w, "%s\n\nUsage:\n", strings.TrimSpace(c.Summary))
	for i, cmd := range c.Commands {
		name := cmd.Name
		if i == 0 {
			name = "[" + name + "]"
		}
		synopsis(w, c.Name+" "+name+" "+cmd.Args, cmd.Summary)
	}
	synopsis(w, c.Name+" version", "print the version, VCS revision and Go version (also --version)")
	synopsis(w, c.Name+" help [COMMAND]", "print this help, or a command's (also COMMAND --help)")
	fmt.Fprintf(w, "\nEach command answers --help with its flags, the environment it reads and an example.\n")
	fmt.Fprintf(w, "Exit status: %d success, %d runtime failure, %d usage or configuration error", ExitOK, ExitFailure, ExitUsage)
	if c.find("audit") != nil {
		fmt.Fprintf(w, ", %d audit found a gap", ExitGap)
	}
	fmt.Fprint(w, ".\n")
	fmt.Fprint(w, "\nEnvironment (name, default, meaning):\n")
	config.Usage(w, c.Config)
}

// groupUsage prints the help of a group of commands ("sink dlq --help").
func (c *CLI) groupUsage(name string) {
	w := c.Stdout
	fmt.Fprintf(w, "%s %s: commands\n\nUsage:\n", c.Name, name)
	for _, cmd := range c.Commands {
		if g, _, _ := strings.Cut(cmd.Name, " "); g == name && cmd.Name != name {
			synopsis(w, c.Name+" "+cmd.Name+" "+cmd.Args, cmd.Summary)
		}
	}
	fmt.Fprintf(w, "\n`%s %s COMMAND --help` shows a command's flags, the environment it reads and an example.\n", c.Name, name)
}

// synopsis writes one line of a command list, the summary beside the
// synopsis or, when it is long, under it.
func synopsis(w io.Writer, syn, summary string) {
	const col = 28
	syn = strings.TrimSpace(syn)
	if len(syn) < col-2 {
		fmt.Fprintf(w, "  %-*s%s\n", col-2, syn, summary)
		return
	}
	fmt.Fprintf(w, "  %s\n  %*s%s\n", syn, col-2, "", summary)
}

// CommandUsage prints the help of the command named sub: synopsis, detail,
// the flags fs defines, the environment it reads and an example.
func (c *CLI) CommandUsage(sub string, fs *flag.FlagSet) {
	w := c.Stdout
	cmd := c.find(sub)
	if cmd == nil {
		cmd = &Command{Name: sub}
	}
	fmt.Fprintf(w, "%s %s: %s\n\nUsage:\n  %s\n", c.Name, cmd.Name, cmd.Summary,
		strings.TrimSpace(c.Name+" "+cmd.Name+" "+cmd.Args))
	if cmd.Detail != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(cmd.Detail, "\n"))
	}
	hasFlags := false
	if fs != nil {
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	}
	if hasFlags {
		fmt.Fprint(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if cmd.Env == nil {
		fmt.Fprint(w, "\nEnvironment (name, default, meaning):\n")
	} else {
		fmt.Fprint(w, "\nEnvironment it reads (name, default, meaning):\n")
	}
	config.UsageOf(w, c.Config, cmd.Env)
	if cmd.Example != "" {
		fmt.Fprint(w, "\nExample:\n")
		for _, line := range strings.Split(strings.TrimSpace(cmd.Example), "\n") {
			fmt.Fprintf(w, "  %s\n", strings.TrimSpace(line))
		}
	}
}

// Flags parses the flags of the command sub; positional arguments are
// refused. --help prints the command's help (CommandUsage) and returns
// flag.ErrHelp; mistakes are UsageErrors.
func (c *CLI) Flags(sub string, args []string, define func(*flag.FlagSet)) error {
	fs := flag.NewFlagSet(c.Name+" "+sub, flag.ContinueOnError)
	if define != nil {
		define(fs)
	}
	if err := ParseFlags(fs, args, func() { c.CommandUsage(sub, fs) }); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return Usagef("%s: %w", sub, err)
	}
	if fs.NArg() > 0 {
		return Usagef("%s: unexpected argument %q (see %s %s --help)", sub, fs.Arg(0), c.Name, sub)
	}
	return nil
}

// Load fills cfg from the environment and validates it. A bad or missing
// variable is a UsageError: nothing was attempted.
func (c *CLI) Load(cfg Validator) error {
	if err := config.Load(cfg, c.Environ); err != nil {
		return Usagef("configuration:\n%w", err)
	}
	if err := cfg.Validate(); err != nil {
		return Usagef("configuration:\n%w", err)
	}
	return nil
}

// ConnectQuiet connects to NATS for a one-shot command: it logs only with
// LOG_LEVEL=debug and gives up after 10 seconds.
func (c *CLI) ConnectQuiet(ctx context.Context, common *config.Common, purpose string) (*nats.Conn, error) {
	log := zerolog.Nop()
	if common.LogLevel == "debug" {
		log = config.NewLogger(common, c.Stderr, c.Name)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return config.ConnectNATS(cctx, common, "jetstream-bridge-"+c.Name+"-"+purpose, log)
}

// Watch calls show once, or every interval until ctx ends when interval > 0,
// clearing the terminal between rounds.
func (c *CLI) Watch(ctx context.Context, interval time.Duration, clear bool, show func() error) error {
	for {
		if interval > 0 && clear {
			fmt.Fprint(c.Stdout, "\033[H\033[2J")
		}
		err := show()
		if interval <= 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}
