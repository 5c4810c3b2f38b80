"""Helpers shared by the test folders: processes, Redis dumps, IMAP set-ups, throwaway plugins."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
