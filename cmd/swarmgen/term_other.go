//go:build !unix

package main

import "os"

// termWidth is unknown off Unix; redrawn lines assume 80 columns.
func termWidth(*os.File) int { return 0 }
