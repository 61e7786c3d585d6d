package main

import (
	"fmt"
	"io"
	"log/slog"
)

// summary is a verb's final report: the text lines it prints to stderr
// as they are, or, with log_format = "json", one JSON log line (msg
// "VERB summary") with its figures as fields, so that a log shipper reads
// it like every other line.
type summary struct {
	verb  string
	text  []string
	attrs []any
}

func (s *summary) line(format string, args ...any) {
	s.text = append(s.text, fmt.Sprintf(format, args...))
}

func (s *summary) add(attrs ...any) { s.attrs = append(s.attrs, attrs...) }

func (s *summary) write(w io.Writer, logFormat string) {
	if logFormat == "json" {
		slog.New(slog.NewJSONHandler(w, nil)).Info(s.verb+" summary", s.attrs...)
		return
	}
	for _, l := range s.text {
		fmt.Fprintln(w, l)
	}
}
