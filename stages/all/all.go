// Package all imports every family of built-in stages, for the default
// flowrun binary: each registers its stages in init. A program that wants
// fewer stages (and fewer dependencies) imports the families it needs
// instead, as Telegraf's plugins/inputs/all does.
package all

import (
	_ "github.com/flowrun/flowrun/stages/table" // aggregate, sort, lookup
)
