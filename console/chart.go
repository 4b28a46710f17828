package console

import (
	"fmt"
	"math"
	"time"
)

// barChart is a stacked bar chart drawn on the server as SVG: one bar per
// day, one coloured segment per series (a manager, or "missed").
type barChart struct {
	ID, Title, Desc string
	Width, Height   int
	Bars            []chartBar
	Grid            []chartLine
	Labels          []chartLabel
	Legend          []chartLegend
	PlotLeft        int
	PlotRight       int
	PlotBottom      int
	CenterX         int
	CenterY         int
	Empty           bool
	// EmptyText is what an empty chart says instead of bars.
	EmptyText string
	// Table is the same data for screen readers and people who want numbers.
	Table chartTable
}

type chartBar struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

type chartLine struct {
	Y     float64
	Label string
}

type chartLabel struct {
	X     float64
	Label string
}

type chartLegend struct {
	Class, Name string
	Total       int
}

type chartTable struct {
	Columns []string
	Rows    []chartTableRow
}

type chartTableRow struct {
	Day    string
	Values []int
}

// chartSeries is one stacked series: its name, CSS class and a value per day.
type chartSeries struct {
	Name, Class string
	Values      []int
}

const (
	chartW, chartH                  = 720, 240
	padLeft, padRight, padTop, padB = 40, 8, 12, 28
)

// newBarChart lays out days × series as stacked bars.
func newBarChart(lc *locale, id, title, desc string, days []time.Time, series []chartSeries) barChart {
	ch := barChart{ID: id, Title: title, Desc: desc, Width: chartW, Height: chartH,
		PlotLeft: padLeft, PlotRight: chartW - padRight, PlotBottom: chartH - padB,
		CenterX: (padLeft + chartW - padRight) / 2, CenterY: (padTop + chartH - padB) / 2}
	totals := make([]int, len(days))
	for _, s := range series {
		sum := 0
		for i, v := range s.Values {
			totals[i] += v
			sum += v
		}
		ch.Legend = append(ch.Legend, chartLegend{Class: s.Class, Name: s.Name, Total: sum})
	}
	top := 0
	for _, t := range totals {
		top = max(top, t)
	}
	ch.Empty = top == 0
	ch.EmptyText = lc.t("chart.empty")
	scaleMax := niceCeil(top)
	plotH := float64(chartH - padTop - padB)
	plotW := float64(chartW - padLeft - padRight)
	slot := plotW / float64(max(len(days), 1))
	barW := math.Min(slot*0.64, 36)
	for g := 0; g <= 4; g++ {
		v := scaleMax * g / 4
		ch.Grid = append(ch.Grid, chartLine{Y: float64(padTop) + plotH - plotH*float64(v)/float64(scaleMax), Label: lc.lang.Number(v)})
	}
	every := 1
	if len(days) > 10 {
		every = 2
	}
	for i, d := range days {
		x := float64(padLeft) + slot*float64(i) + (slot-barW)/2
		y := float64(padTop) + plotH
		for _, s := range series {
			v := s.Values[i]
			if v == 0 {
				continue
			}
			h := plotH * float64(v) / float64(scaleMax)
			y -= h
			ch.Bars = append(ch.Bars, chartBar{X: round1(x), Y: round1(y), W: round1(barW), H: round1(h), Class: s.Class,
				Title: lc.t("chart.bar_title", "Day", lc.weekdayDate(d), "Series", s.Name, "Count", lc.lang.Number(v))})
		}
		if (len(days)-1-i)%every == 0 {
			ch.Labels = append(ch.Labels, chartLabel{X: round1(x + barW/2), Label: lc.dayMonth(d)})
		}
	}
	ch.Table.Columns = []string{lc.t("chart.day")}
	for _, s := range series {
		ch.Table.Columns = append(ch.Table.Columns, s.Name)
	}
	for i, d := range days {
		row := chartTableRow{Day: lc.weekdayDate(d)}
		for _, s := range series {
			row.Values = append(row.Values, s.Values[i])
		}
		ch.Table.Rows = append(ch.Table.Rows, row)
	}
	return ch
}

// niceCeil rounds a maximum up to 4, 8, 20, 40, 80, 200, ... so that the
// four grid lines fall on whole, readable numbers.
func niceCeil(v int) int {
	if v <= 4 {
		return 4
	}
	for base := 1; ; base *= 10 {
		for _, m := range []int{4, 8, 20} {
			if n := m * base; n >= v {
				return n
			}
		}
	}
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// seriesClass is the colour class of the n-th manager's series.
func seriesClass(n int) string { return fmt.Sprintf("s%d", n%8) }
