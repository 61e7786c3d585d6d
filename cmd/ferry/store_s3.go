package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/store"
)

func openS3(ctx context.Context, cfg *config.File, log *slog.Logger) (store.Store, error) {
	return nil, errors.New("the s3:// store is not wired in yet")
}
