import sys
from pathlib import Path

# tests import the shared fixture writers as `datagen`
sys.path.insert(0, str(Path(__file__).parent))
