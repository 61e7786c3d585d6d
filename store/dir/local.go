package dir

import "fmt"

// Path is the file that holds (or would hold) object name: for a caller
// that watches the store's directories (ferry fetch --wait uses inotify
// instead of polling for a marker).
func (s *Store) Path(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", fmt.Errorf("path: %w", err)
	}
	return s.path(name), nil
}
