package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
)

const configExamples = `  # the settings the services would start with: the config file (--config,
  # else FERRY_CONFIG, else /etc/ferry/ferry.toml), the FERRY_* variables over it
  ferry config check

  # a given file, also demanding the keys ferry ship requires
  ferry config check --config /etc/ferry/ferry-pg.toml --for ship

  # what an override changes
  FERRY_SHIP_MAX_AGE=5s ferry config check --config /etc/ferry/ferry.toml

It prints the effective settings as TOML on stdout, secrets shown as ***, and
exits 0. Otherwise it names the file and line, or the variable, of every
problem and exits 1; or 2 for a bad flag, or a key --for requires that is
missing.
`

// runConfig is "ferry config SUBCOMMAND"; check is the only one.
func runConfig(args []string, stdout, stderr io.Writer) error {
	const synopsis = "ferry config check [--config FILE] [--for ship|receive|sync]"
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(stderr, "Usage: %s\n\nRun 'ferry config check --help' for its flags.\n", synopsis)
		if len(args) == 0 {
			return usageError{errors.New("want a subcommand: check")}
		}
		return errHelp
	}
	if args[0] != "check" {
		return usageError{fmt.Errorf("unknown subcommand %q (want check)", args[0])}
	}
	c := newFlags("config check", synopsis, configExamples, stderr)
	forVerb := c.fs.String("for", "", "also demand the keys this `verb` requires: ship, receive or sync")
	c.keepGeneration = true // as written: 0 follows the stream's history
	if err := c.parseNoArgs(args[1:], ""); err != nil {
		return err
	}
	switch *forVerb {
	case "":
	case "ship", "receive", "sync":
		if err := c.cfg.Validate(*forVerb); err != nil {
			return usageError{fmt.Errorf("invalid settings for %s:\n%w", *forVerb, err)}
		}
	default:
		return usageError{fmt.Errorf("--for %q: want ship, receive or sync", *forVerb)}
	}
	file := "none (defaults)"
	if c.configPath != "" {
		file = c.configPath + " (from " + c.configFrom + ")"
	}
	fmt.Fprintf(stdout, "# ferry config check: the effective settings; secrets are shown as %q.\n# config file: %s\n", "***", file)
	env := c.cfg.EnvVars()
	for _, key := range slices.Sorted(maps.Keys(env)) {
		fmt.Fprintf(stdout, "# %s set by %s\n", key, env[key])
	}
	fmt.Fprintln(stdout)
	return c.cfg.WriteTOML(stdout)
}
