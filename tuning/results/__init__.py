"""Reading back what a search's trials wrote: one row per trial and every epoch, the
report (best configuration, importance at a common budget, plots), statistics over seeds,
a confirmation's verdict, the reproduced paper table and the published best model. A new
column or figure goes here.
"""
