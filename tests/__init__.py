"""Tests for liverzoo."""
