"""The sweep: plan, point sources (grid and Max-Q search), the point loop, one run end to end, and the
guard that puts every setting back."""
