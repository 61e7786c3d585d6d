package source

import (
	"context"

	"github.com/ferry-dr/ferry/shipper"
)

// None is the source of a push-only shipper (ship.source = "none"): it
// reads nothing and returns nil when ctx ends. Its records come from
// `ferry push` through the shipper's push socket, so it needs no stdin.
type None struct{}

var _ shipper.Source = None{}

// Run waits for ctx to end.
func (None) Run(ctx context.Context, _ shipper.Sink) error {
	<-ctx.Done()
	return nil
}
