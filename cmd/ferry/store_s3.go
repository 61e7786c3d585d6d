package main

import (
	"context"
	"log/slog"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/s3"
)

// openS3 builds the s3:// store from the URL and the [s3] table; unset
// settings fall back to the AWS environment inside the store. onRequest,
// if not nil, counts its requests (s3.Config.OnRequest).
func openS3(ctx context.Context, cfg *config.File, onRequest func(kind string), log *slog.Logger) (store.Store, error) {
	bucket, prefix, err := s3.ParseURL(cfg.Store)
	if err != nil {
		return nil, usageError{err}
	}
	c := cfg.S3
	return s3.New(ctx, s3.Config{
		Bucket:             bucket,
		Prefix:             prefix,
		Endpoint:           c.Endpoint,
		Region:             c.Region,
		PathStyle:          c.PathStyle,
		CAFile:             c.CAFile,
		InsecureSkipVerify: c.InsecureSkipVerify,
		StorageClass:       c.StorageClass,
		SSE:                c.SSE,
		SSEKMSKeyID:        c.SSEKMSKeyID,
		AccessKey:          c.AccessKey,
		SecretKey:          c.SecretKey,
		SessionToken:       c.SessionToken,
		Profile:            c.Profile,
		OnRequest:          onRequest,
	}, log)
}
