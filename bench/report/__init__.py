"""Reports: document model, Markdown and HTML, plots, terminal tables."""
