// Package catalog names, writes and reads the small objects a stream keeps
// in a store beside its segments, by which retention, restore, the
// shipper and operators learn about the stream without reading segments:
//
//	<stream>/watermarks/<receiver id>.id                    a receiver's registration
//	<stream>/watermarks/<receiver id>/<applied seq>.json    its watermark (Watermark)
//	<stream>/baselines/<gen>-<begin seq>-<end seq>.json     a baseline marker (batch.Baseline)
//	<stream>/starts/<gen>-<seq>.json                        a start marker (batch.Start)
//	<stream>/bundled/<writer>-<n>.json                      a bundle marker (BundleMarker)
//	_bundles/<writer>/<n>.bundle                            a writer's bundle (batch.BundleName)
//
// with seqs in 16 and generations in 8 lower-case hex digits, so listings
// sort in seq order. The baseline and start markers' names and content are defined
// with the segment format in package batch (docs/FORMAT.md); this package
// lists and reads them through a store. What the objects mean for
// applying, pruning or restoring is up to the receiver, retention and the
// shipper.
//
// catalog depends only on store and batch, so anything above them (the
// shipper, the receiver, retention, cmd/ferry) may use it.
package catalog
