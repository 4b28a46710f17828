// Command hello stands for maskpbx in the image test: a static binary that
// says it runs.
package main

import (
	"fmt"
	"os"
)

func main() { fmt.Println("running as", os.Getuid()) }
