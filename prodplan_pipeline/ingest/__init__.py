"""Workbook -> staging -> quarantine -> core: plain functions over a connection, no Dagster."""
