package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// manCommand writes the manual page, ipng-stats(8), generated from the
// commands and flags themselves; debian/rules installs its output. It is
// hidden: the page documents every other command, not itself.
func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print the manual page ipng-stats(8) in roff",
		Hidden: true,
		Action: func(c *cli.Context) error {
			page, err := c.App.ToManWithSection(8)
			if err != nil {
				return fmt.Errorf("rendering the manual page: %w", err)
			}
			_, err = fmt.Fprint(c.App.Writer, page)
			return err
		},
	}
}
