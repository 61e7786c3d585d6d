// Package apply holds the receiver's appliers, one kind per file (dir: in
// dir*.go): file:PATH appends the records' data to a file, exec:CMD pipes
// each segment to a command, stdout writes the data out, dir:PATH makes a
// directory tree match a dir: source (docs/DIRTREE.md). Each satisfies
// receiver.Applier, which the receiver owns; Parse picks one by its spec.
package apply

import (
	"fmt"
	"io"
	"strings"

	"github.com/ferry-dr/ferry/receiver"
)

// Parse builds an applier from its spec: file:PATH, dir:PATH, exec:CMD
// or stdout (which writes to stdout).
func Parse(spec string, stdout io.Writer) (receiver.Applier, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "file":
		if arg == "" {
			return nil, fmt.Errorf("apply %q: file: needs a path", spec)
		}
		return &File{Path: arg}, nil
	case "exec":
		if strings.TrimSpace(arg) == "" {
			return nil, fmt.Errorf("apply %q: exec: needs a command", spec)
		}
		return &Exec{Command: arg}, nil
	case "stdout":
		if arg != "" {
			return nil, fmt.Errorf("apply %q: stdout takes no argument", spec)
		}
		return &Writer{W: stdout, Name: "stdout"}, nil
	case "dir":
		return parseDir(spec)
	}
	return nil, fmt.Errorf("apply %q: unknown applier (want file:PATH, dir:PATH, exec:CMD or stdout)", spec)
}
