//go:build !linux

package check

import "errors"

var errNoDiskFull = errors.New("--disk-fulls runs on Linux only")

func freeBytes(string) (uint64, error) { return 0, errNoDiskFull }

func allocate(string, int64) error { return errNoDiskFull }
