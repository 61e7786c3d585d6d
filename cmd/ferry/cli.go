package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

// The command layer. Cobra dispatches the verbs of the verbs table, prints
// help on stdout (ferry --help, ferry help VERB, ferry VERB --help),
// suggests a verb for a mistyped one, prints the version, and generates the
// shell completion scripts and the man pages.
//
// Each verb still parses its own arguments: cobra hands a verb's command
// line to its run function untouched (DisableFlagParsing), and the verb
// parses it with pflag through common.parse, or with anything else, so a
// verb is registered with one line in the verbs table. Cobra learns a
// verb's flags, synopsis and examples from the flag set the verb builds
// (newFlags) when it is run with --help, which stops every verb at its flag
// parsing: help, completion and the man pages come from the very
// definitions the verb parses with.

// rootHelp is the help of ferry itself and of each verb. A verb's flags
// override the config file when it has --config.
const rootHelp = `{{if .HasParent}}Usage: {{.UseLine}}

{{with .Long}}{{.}}{{else}}{{.Short}}{{end}}
{{- if .HasAvailableLocalFlags}}

{{if .LocalFlags.Lookup "config"}}Flags (they override the config file):{{else}}Flags:{{end}}
{{flagUsages .LocalFlags}}{{end}}
{{- if .HasExample}}

Examples:
{{.Example}}{{end}}
{{else}}ferry — {{.Short}}

Usage: ferry COMMAND [flags]

Commands:
{{- range .Commands}}{{if .IsAvailableCommand}}
  {{rpad .Name .NamePadding}} {{.Short}}{{end}}{{end}}

Flags:
{{flagUsages .LocalFlags}}

Run 'ferry help COMMAND' or 'ferry COMMAND --help' for the flags and examples of a command.
{{end}}`

func init() {
	cobra.AddTemplateFunc("flagUsages", flagUsages)
}

// flagUsages lists the visible flags of fs for help, one a line:
// pflag's FlagUsages, without the "[=true|false]" it puts after every
// boolean flag.
func flagUsages(fs *pflag.FlagSet) string {
	type row struct{ left, usage string }
	var rows []row
	width := 0
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		left := "      --" + f.Name
		if f.Shorthand != "" {
			left = "  -" + f.Shorthand + ", --" + f.Name
		}
		name, usage := pflag.UnquoteUsage(f)
		if name != "" {
			left += " " + name
		}
		switch f.DefValue {
		case "", "0", "0s", "false", "[]":
		default:
			if f.Value.Type() == "string" {
				usage += fmt.Sprintf(" (default %q)", f.DefValue)
			} else {
				usage += fmt.Sprintf(" (default %s)", f.DefValue)
			}
		}
		rows = append(rows, row{left, usage})
		width = max(width, len(left))
	})
	var b strings.Builder
	for i, r := range rows {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%-*s   %s", width, r.left, r.usage)
	}
	return b.String()
}

// newRootCmd builds ferry's command tree. Verbs whose flags help,
// completion or the man pages need are described by describeVerbs.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:     "ferry",
		Short:   "disaster-recovery replication by batched log shipping",
		Version: version,
		// run prints errors, and no usage after one.
		SilenceErrors:              true,
		SilenceUsage:               true,
		SuggestionsMinimumDistance: 2,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetHelpTemplate(rootHelp)
	root.SetVersionTemplate(readBuildInfo().String() + "\n")
	root.SetHelpCommand(helpCmd(root))
	for name, v := range verbs {
		root.AddCommand(verbCmd(name, v, stdout, stderr))
	}
	root.AddCommand(manCmd(root))
	return root
}

// verbCmd is the command of one verb of the verbs table.
func verbCmd(name string, v verb, stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:                   name,
		Short:                 v.summary,
		DisableFlagParsing:    true, // the verb's own (common.parse)
		DisableFlagsInUseLine: true, // its synopsis says where they go
		RunE: func(cmd *cobra.Command, args []string) error {
			verbFlags.take()
			err := v.run(args, stdout, stderr)
			if c := verbFlags.take(); c != nil && errors.Is(err, errHelp) {
				describe(cmd, c)
				return cmd.Help()
			}
			if err != nil {
				return verbError{name, err}
			}
			return nil
		},
	}
}

// verbError is an error a verb's run function returned.
type verbError struct {
	verb string
	err  error
}

func (e verbError) Error() string { return e.err.Error() }
func (e verbError) Unwrap() error { return e.err }

// describe tells cmd the flags, synopsis and examples of its verb, from
// the flag set the verb built.
func describe(cmd *cobra.Command, c *common) {
	cmd.Flags().AddFlagSet(c.fs)
	if c.synopsis != "" {
		cmd.Use = strings.TrimPrefix(c.synopsis, "ferry ")
	}
	cmd.Example = strings.TrimRight(c.examples, "\n")
}

// describeVerbs describes every verb of root by running it with --help,
// its output discarded. A verb that builds no flag set with newFlags (or
// newVerbFlags) stays as it is: its help is then its own (helpCmd).
func describeVerbs(root *cobra.Command) {
	for _, cmd := range root.Commands() {
		v, ok := verbs[cmd.Name()]
		if !ok {
			continue
		}
		verbFlags.take()
		err := v.run([]string{"--help"}, io.Discard, io.Discard)
		if c := verbFlags.take(); c != nil && errors.Is(err, errHelp) {
			describe(cmd, c)
		}
	}
}

// verbFlags holds the first flag set a verb built since it was last taken:
// what the verb being run (or described) parses its arguments with. A
// verb that runs another (drill runs verify) built its own first.
var verbFlags flagRecorder

type flagRecorder struct {
	mu    sync.Mutex
	first *common
}

func (r *flagRecorder) built(c *common) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.first == nil {
		r.first = c
	}
}

func (r *flagRecorder) take() *common {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.first
	r.first = nil
	return c
}

// helpCmd is "ferry help [COMMAND]": cobra's, but a command it does not
// know is a usage error with suggestions (exit 2), and a verb with a help
// of its own (one that builds no flag set with newFlags) prints that.
func helpCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "help [COMMAND]",
		Short: "show the help of ferry or of a command",
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
			var names []cobra.Completion
			for _, c := range root.Commands() {
				if c.IsAvailableCommand() {
					names = append(names, cobra.CompletionWithDesc(c.Name(), c.Short))
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(_ *cobra.Command, args []string) error {
			cmd, rest, err := root.Find(args)
			if err != nil {
				return err
			}
			if len(rest) > 0 {
				return fmt.Errorf("%s has no command %q", cmd.CommandPath(), rest[0])
			}
			if v, ok := verbs[cmd.Name()]; ok && cmd.Parent() == root && !cmd.HasAvailableLocalFlags() {
				out := cmd.OutOrStdout()
				if err := v.run([]string{"--help"}, out, out); err != nil && !errors.Is(err, errHelp) {
					return err
				}
				return nil
			}
			cmd.InitDefaultHelpFlag()
			cmd.InitDefaultVersionFlag()
			return cmd.Help()
		},
	}
}

// manCmd is "ferry man --dir DIR", which packaging runs: it writes the man
// pages, ferry.1 and ferry-VERB.1, from the same definitions as help.
func manCmd(root *cobra.Command) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:    "man --dir DIR",
		Short:  "write the man pages (ferry.1, ferry-VERB.1) to a directory",
		Hidden: true, // for packaging
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if dir == "" {
				return usageError{errors.New("--dir is required")}
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return verbError{"man", err}
			}
			root.DisableAutoGenTag = true
			err := doc.GenManTree(root, &doc.GenManHeader{
				Title:   "FERRY",
				Section: "1",
				Source:  "ferry " + version,
				Manual:  "ferry manual",
			}, dir)
			if err != nil {
				return verbError{"man", err}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "write the pages to this `dir` (made if missing)")
	return cmd
}

// run runs ferry with args (without the program name) and returns its
// exit status.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	if len(args) == 0 {
		// The help, on stderr, and a usage error.
		root.SetOut(stderr)
		root.SetArgs([]string{})
		root.Execute()
		return exitUsage
	}
	if a := args[0]; len(a) > 2 && a[0] == '-' && a[1] != '-' {
		args = append([]string{"-" + a}, args[1:]...) // -version, -help
	}
	switch args[0] {
	case "help", "man":
		describeVerbs(root)
	case cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd:
		describeVerbs(root)
		// The descriptions completion shows: "store URL", not "store `URL`".
		for _, cmd := range root.Commands() {
			cmd.Flags().VisitAll(func(f *pflag.Flag) { f.Usage = strings.ReplaceAll(f.Usage, "`", "") })
		}
	}
	if cmd, _, err := root.Find(args[:1]); err == nil && cmd != root && !cmd.DisableFlagParsing {
		args = append(args[:1:1], longFlags(cmd.Flags(), args[1:])...) // man -dir
	}
	root.SetArgs(args)
	_, err := root.ExecuteC()
	var ve verbError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ve):
		return verbExit(ve, stderr)
	}
	// Cobra's: an unknown verb or flag, or a bad argument to help,
	// completion or man.
	msg := strings.TrimRight(err.Error(), "\n")
	if strings.Contains(msg, "\n") {
		msg += "\n" // after cobra's "Did you mean this?" list
	}
	fmt.Fprintf(stderr, "ferry: %s\nRun 'ferry --help' for usage.\n", msg)
	return exitUsage
}

// verbExit prints a verb's error and returns its exit status (see the
// README, "Exit status").
func verbExit(ve verbError, stderr io.Writer) int {
	err := ve.err
	if errors.Is(err, errHelp) {
		return 0
	}
	if sig := syscall.Signal(stopSignal.Load()); sig != 0 {
		// A run a signal ended before its work was done: 130 for
		// SIGINT, 143 for SIGTERM, as a shell reports a process the
		// signal killed.
		fmt.Fprintf(stderr, "ferry %s: stopped by %s: %v\n", ve.verb, signalName(sig), err)
		return 128 + int(sig)
	}
	fmt.Fprintf(stderr, "ferry %s: %v\n", ve.verb, err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return 1
}
