package sink

// SetHeldProbe makes the sink made from o call f with the messages it
// holds and their bytes after each one is added.
func SetHeldProbe(o *Options, f func(count int, bytes int64)) { o.heldProbe = f }
