package recorder

import (
	"os"
	"testing"

	"github.com/maskpbx/maskpbx/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
