package crypt

// SetRangeChunks sets the fewest chunks a goroutine of DecryptInPlace
// decrypts and returns a func that restores it.
func SetRangeChunks(n int) (restore func()) {
	old := rangeChunks
	rangeChunks = n
	return func() { rangeChunks = old }
}
