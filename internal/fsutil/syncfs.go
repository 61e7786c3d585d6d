package fsutil

import "fmt"

// SyncfsReportsErrorsOn says whether syncfs(2) of kernel release rel
// ("6.1.0-18-amd64") reports write-back errors: Linux 5.8 and later.
// Before that it returns 0 whatever write-back failed, so a group sync
// through it proves nothing and each file must be fsynced instead.
func SyncfsReportsErrorsOn(rel string) bool {
	var major, minor int
	if _, err := fmt.Sscanf(rel, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 5 || major == 5 && minor >= 8
}
